"""The training curves: the per-epoch numbers of every model folder's ``metrics.jsonl``."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsss_cli.report.runinfo import stage_rank, workdir_key
from wsss_cli.workdir import Layout

# training stages and the folder of their model (``Layout.model_dir``) unless ``--out`` named another
TRAINING_STAGES = {"train-cls": "cls", "train-aff": "aff", "train-seg": "seg",
                   "train-single-stage": "single_stage"}
METRICS = "metrics.jsonl"
CURVE_KEYS = ("loss", "loss_cls", "loss_mask", "val_miou")  # the numbers of metrics.jsonl drawn


@dataclass
class TrainingCurve:
    """The per-epoch numbers of one model folder's ``metrics.jsonl``."""

    stage: str  # the state.json entry, e.g. ``train-seg`` or ``train-seg:seg_b``
    key: str  # the file, relative to the workdir
    epochs: list[int]
    series: dict[str, list[float | None]]  # CURVE_KEYS present, one value (or None) per epoch
    seconds: float | None = None  # the epochs' time, summed


def training_curves(workdir: Path, state: dict[str, Any], config: dict[str, Any]) -> list[TrainingCurve]:
    """The curves of the model folders of the training stages in ``state.json`` (``--out``
    of their config.toml section, else the name after ``stage:``, else the kind's folder),
    then of any default model folder no entry names."""
    folders: dict[Path, str] = {}
    for name in sorted(state, key=stage_rank):
        stage, _, output = name.partition(":")
        if stage not in TRAINING_STAGES:
            continue
        out = config.get(name, {}).get("out")
        folder = out if isinstance(out, str) and out else output or TRAINING_STAGES[stage]
        folders.setdefault(workdir / folder, name)
    for stage, kind in TRAINING_STAGES.items():
        folders.setdefault(Layout(workdir).model_dir(kind), stage)
    curves = []
    for folder, stage in folders.items():
        curve = read_curve(folder / METRICS, stage, workdir)
        if curve is not None:
            curves.append(curve)
    return curves


def read_curve(path: Path, stage: str, workdir: Path) -> TrainingCurve | None:
    """The epochs of a ``metrics.jsonl`` (the last record of an epoch wins: a resumed run may
    repeat one); None when there is no readable record. A line being written is skipped."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    records: dict[int, dict[str, Any]] = {}
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("epoch"), int):
            records[record["epoch"]] = record
    if not records:
        return None
    epochs = sorted(records)
    series = {}
    for key in CURVE_KEYS:
        values = [_number(records[e].get(key)) for e in epochs]
        if any(v is not None for v in values):
            series[key] = values
    seconds = [_number(records[e].get("seconds")) for e in epochs]
    total = sum(v for v in seconds if v is not None) if any(v is not None for v in seconds) else None
    return TrainingCurve(stage, workdir_key(path, workdir), epochs, series, total)


def _number(value: Any) -> float | None:
    """A finite number, else None (a NaN loss is a gap in the curve)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)
