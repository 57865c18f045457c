"""``--config FILE.toml``: option values for any command, a section per command.

```toml
data = "VOCdevkit/VOC2012"     # top-level keys: every command that has the option
workdir = "runs/voc"
device = "cuda"                 # global options too (--device, --seed, --quiet)

[train-cls]
backbone = "resnet38"
batch-size = 8                  # dashes or underscores
```
Command-line options win over the file; the file wins over built-in defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from wsss_cli.errors import WsssError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

GLOBAL_OPTIONS = ("device", "seed", "quiet")


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise WsssError(f"--config {path}: cannot read ({e.strerror})") from None
    except tomllib.TOMLDecodeError as e:
        raise WsssError(f"--config {path}: invalid TOML ({e})") from None


def _param_names(command: click.Command) -> set[str]:
    return {p.name for p in command.params if p.name}


def default_map(path: Path, commands: dict[str, click.Command]) -> tuple[dict, dict]:
    """``(click default_map, global option values)`` from a TOML file.

    Unknown sections and unknown keys are errors, so a typo never silently does nothing.
    """
    raw = read_toml(path)
    common = {k.replace("-", "_"): v for k, v in raw.items() if not isinstance(v, dict)}
    known_anywhere = set(GLOBAL_OPTIONS).union(*(_param_names(c) for c in commands.values()))
    for key in common:
        if key not in known_anywhere:
            raise WsssError(f"--config {path}: unknown option {key!r}")
    defaults: dict[str, dict] = {}
    for name, command in commands.items():
        params = _param_names(command)
        defaults[name] = {k: v for k, v in common.items() if k in params}
    for section, values in raw.items():
        if not isinstance(values, dict):
            continue
        if section not in commands:
            raise WsssError(f"--config {path}: unknown command section [{section}]")
        params = _param_names(commands[section])
        for key, value in values.items():
            name = key.replace("-", "_")
            if name not in params:
                raise WsssError(f"--config {path}: [{section}] has no option {key!r}")
            defaults[section][name] = value
    globals_ = {k: v for k, v in common.items() if k in GLOBAL_OPTIONS}
    return defaults, globals_
