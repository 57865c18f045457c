"""What a workdir records about its run: ``state.json``'s stage entries (a failed one with
its error), their settings beside ``config.toml``'s options, the run-wide facts (seed,
device, versions, environment) and the dataset the run used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsss_cli.data.dataset import LabelledDataset, open_dataset
from wsss_cli.errors import WsssError
from wsss_cli.workdir import Layout, Workdir

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

STAGE_ORDER = ("train-cls", "dump-cams", "eval-cams", "make-aff-labels", "train-aff",
               "random-walk", "make-pseudo", "train-seg", "train-single-stage", "predict", "eval")


@dataclass
class Setting:
    """One row of a stage's settings table."""

    key: str
    value: str
    hashed: bool = True  # part of the settings hash (state.json), else an option of config.toml


@dataclass
class StageEntry:
    """One stage run of ``state.json``."""

    name: str
    status: str
    seconds: float | None
    done: Any = None  # images (or items) done, when recorded
    total: Any = None  # out of, when recorded
    updated: str = ""
    error: str = ""  # why a failed run stopped
    settings: list[Setting] = field(default_factory=list)  # state.json's settings, then config.toml's
    versions: list[Setting] = field(default_factory=list)  # library versions
    environment: list[Setting] = field(default_factory=list)  # threads, CPU, ... (nested keys dotted)


@dataclass
class Fact:
    """A run-wide fact (seed, device, versions, ...): its value, or its values by stage."""

    label: str
    value: str
    varies: bool = False  # the stages disagree; ``value`` then names which stage had which
    scope: str = ""  # which stages recorded it, when not all did


def read_state(workdir: Path) -> dict[str, Any]:
    if not (workdir / "state.json").is_file():
        raise WsssError(f"--workdir {workdir}: not a wsss workdir (no state.json)")
    return Workdir(workdir).state()


def read_config(workdir: Path) -> dict[str, Any]:
    """``config.toml`` (a section per stage run), or empty when missing or unreadable."""
    try:
        config = tomllib.loads(Layout(workdir).config.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    return {k: v for k, v in config.items() if isinstance(v, dict)}


def stage_entries(state: dict[str, Any], config: dict[str, Any] | None = None) -> list[StageEntry]:
    """The stage runs of ``state.json`` in pipeline order (``stage:output`` after ``stage``)."""
    entries = []
    for name in sorted(state, key=stage_rank):
        entry = state[name] if isinstance(state[name], dict) else {}
        seconds = entry.get("seconds")
        error = entry.get("error")
        entries.append(StageEntry(
            name, str(entry.get("status", "?")),
            float(seconds) if isinstance(seconds, (int, float)) else None,
            entry.get("count", entry.get("images")), entry.get("total"),
            str(entry.get("updated", "")).replace("T", " "),
            "" if error is None else str(error),
            stage_settings(entry, (config or {}).get(name, {})),
            _flat_settings(entry.get("versions")), _flat_settings(entry.get("environment"))))
    return entries


def _flat_settings(obj: Any) -> list[Setting]:
    return [Setting(k, v) for k, v in _flat(obj)] if isinstance(obj, dict) else []


def stage_settings(entry: dict[str, Any], section: dict[str, Any]) -> list[Setting]:
    """The settings that made the outputs (state.json), then config.toml's other options
    (device, workers, ...)."""
    settings = entry.get("settings") if isinstance(entry.get("settings"), dict) else {}
    rows = [Setting(k, _text(v)) for k, v in settings.items()]
    rows += [Setting(k, _text(v), hashed=False) for k, v in section.items() if k not in settings]
    return rows


def _flat(obj: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Nested dicts as ``(dotted.key, text)`` rows; None values left out."""
    rows = []
    for key, value in obj.items():
        if isinstance(value, dict):
            rows += _flat(value, f"{prefix}{key}.")
        elif value is not None:
            rows.append((f"{prefix}{key}", _text(value)))
    return rows


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return ", ".join(_text(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k} {_text(v)}" for k, v in value.items())
    return str(value)


def run_facts(state: dict[str, Any], config: dict[str, Any]) -> list[Fact]:
    """Seed, device, versions and every environment key recorded, each the same for all
    stages or listed by stage."""
    by_label: dict[str, dict[str, list[str]]] = {}  # label -> value -> stages

    def note(label: str, value: Any, stage: str) -> None:
        if value is not None and value != {}:
            by_label.setdefault(label, {}).setdefault(_text(value), []).append(stage)

    for name in sorted(state, key=stage_rank):
        entry = state[name] if isinstance(state[name], dict) else {}
        section = config.get(name, {})
        settings = entry.get("settings") if isinstance(entry.get("settings"), dict) else {}
        note("seed", section.get("seed", settings.get("seed")), name)
        note("device", section.get("device"), name)
        versions = entry.get("versions")
        if isinstance(versions, dict):
            note("versions", versions, name)
        environment = entry.get("environment")
        for key, value in (environment.items() if isinstance(environment, dict) else ()):
            note(key.replace("_", " "), value, name)
    facts = []
    for label, values in by_label.items():
        if len(values) == 1:
            (value, stages), = values.items()
            scope = "" if len(stages) == len(state) else (
                f"only {', '.join(stages)}" if len(stages) <= 3 else f"{len(stages)} of {len(state)} stages")
            facts.append(Fact(label, value, scope=scope))
        else:
            facts.append(Fact(label, "; ".join(f"{v} ({', '.join(stages)})" for v, stages in values.items()),
                              varies=True))
    return facts


def stage_rank(name: str) -> tuple[int, str]:
    """Sort key of a state.json entry: pipeline order, ``stage:output`` after ``stage``."""
    base = name.split(":")[0]
    return (STAGE_ORDER.index(base) if base in STAGE_ORDER else len(STAGE_ORDER), name)


def workdir_key(path: Path, workdir: Path) -> str:
    """``path`` relative to the workdir, as shown on the page."""
    try:
        return path.relative_to(workdir).as_posix()
    except ValueError:  # e.g. a model folder given as an absolute --out
        return str(path)


def resolve_data(data: Path | None, workdir: Path) -> LabelledDataset | None:
    """``data`` (``--data``), else the first existing ``data`` of config.toml, else ``WORKDIR/data``.

    An explicit ``--data`` must be a dataset; a guessed one that is not is ignored,
    because the report is still useful without pictures of the images.
    """
    if data is not None:
        return open_dataset(Path(data))
    for candidate in [*_config_data_paths(workdir), workdir / "data"]:
        if candidate.is_dir():
            try:
                return open_dataset(candidate)
            except WsssError:
                continue
    return None


def _config_data_paths(workdir: Path) -> list[Path]:
    return [Path(section["data"]) for section in read_config(workdir).values()
            if isinstance(section.get("data"), str)]
