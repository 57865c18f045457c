"""Stage options declared once: a config dataclass field carries its default, its help,
its type and range, and whether it changes the stage's outputs.

``option(...)`` is the field factory the stages' config dataclasses use; the CLI builds
its click options from these fields (``cli.py``), the settings hash reads ``hashed``,
``config.toml`` records every field. Nothing here imports click or torch.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import MISSING, Field, field, fields
from pathlib import Path
from typing import Any


def option(default: Any = MISSING, help: str = "", *, hashed: bool | str = True, cli: bool = True,
           **click: Any) -> Any:
    """A config field with its command-line metadata.

    ``hashed``: the value changes the outputs (part of the settings hash);
    ``"unless-default"`` for an option added later, so that work folders made before it
    keep their settings hash. ``cli``: the
    field becomes a command-line option. ``click`` holds what the option needs beyond the
    field's type: ``min``/``max``/``min_open`` (ranges), ``choices``, ``is_flag`` (a bare
    flag instead of ``--x/--no-x``), ``secondary`` (the off name of a flag pair),
    ``metavar``, ``default_text`` (shown instead of a None default), ``exists``,
    ``file_okay``/``dir_okay`` (paths).
    """
    metadata = {"help": help, "hash": hashed, "cli": cli, "click": click}
    return field(default=default, metadata=metadata)


def same_as(cls: type, name: str, prefix: str = "", default: Any = MISSING, **click: Any) -> Any:
    """An option of a workflow that feeds the option ``name`` of the stage config ``cls``:
    that option's default, help (after ``prefix``) and range, declared once there;
    ``default`` and ``click`` override them (None with a ``default_text``: a preset's)."""
    source = next(f for f in fields(cls) if f.name == name)
    return option(source.default if default is MISSING else default, prefix + source.metadata["help"],
                  hashed=source.metadata["hash"], **{**source.metadata["click"], **click})


def unhashed(default: Any = None, help: str = "", **click: Any) -> Any:
    """An option that does not change a stage's outputs (workers, resume, ...)."""
    return option(default, help, hashed=False, **click)


def default_of(function: Callable, parameter: str) -> Any:
    """The default of ``function``'s ``parameter``: an option that feeds an op takes the op's
    own default instead of retyping it."""
    return inspect.signature(function).parameters[parameter].default


def cli_fields(cls: type) -> list[Field]:
    """The fields of a config class that are command-line options, in declaration order."""
    return [f for f in fields(cls) if f.metadata.get("cli", True) and f.name != "runtime"]


def settings_of(cfg: Any) -> dict[str, Any]:
    """The JSON-able settings of a config dataclass that determine its outputs."""
    out: dict[str, Any] = {}
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        hashed = f.metadata.get("hash", True)
        if not hashed or (hashed == "unless-default" and value == f.default):
            continue
        if f.name == "runtime":
            out["seed"] = value.seed
        elif isinstance(value, Path):  # "data" and "/abs/data" are the same dataset
            out[f.name] = str(value.resolve())
        else:
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def options_of(cfg: Any) -> dict[str, Any]:
    """Every option of a config (for ``config.toml``), paths as strings."""
    out = {}
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if f.name == "runtime":
            out.update(device=value.device, seed=value.seed)
        elif isinstance(value, Path):
            out[f.name] = str(value)
        elif value is not None:
            out[f.name] = value
    return out
