"""The evaluations of a workdir: every result with an mIoU (``WORKDIR/eval/*.json`` and
``WORKDIR/pred/*/eval.json``) with its per-class IoU and threshold sweep, and the class
names they imply when there is no dataset. ``eval/diagnose_*.json`` is not an evaluation:
its section is :mod:`~wsss_cli.report.diagnosis`'s.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from wsss_cli.data.dataset import LabelledDataset
from wsss_cli.report.diagnosis import is_diagnosis
from wsss_cli.report.runinfo import workdir_key
from wsss_cli.workdir import Layout

# evaluation file stems: (pattern, rank in the pipeline, label with {split})
EVAL_NAMES = (
    (r"(?P<set>cams(?:_.+)?)_(?P<split>.+)", 0, "CAM{set} ({split}{threshold})"),
    (r"pseudo_nocrf_(?P<split>.+)", 2, "random walk, no CRF ({split})"),
    (r"pseudo_(?P<split>.+)", 3, "pseudo-labels ({split})"),
    (r"ial_round(?P<round>\d+)(?:_(?P<split>.+))?", 3, "IAL round {round} ({split}{regions})"),
    (r"(?:seg|pred)_(?P<split>.+)", 4, "segmentation net ({split})"),
)
PRED_EVAL = "eval.json"  # what `wsss eval` writes next to a prediction set by default


@dataclass
class Evaluation:
    """One mIoU result shown on the page."""

    key: str  # where it came from, e.g. ``eval/cams_train.json``
    label: str
    miou: float
    per_class: dict[str, float | None]
    rank: tuple = ()
    images: int | None = None
    sweep: dict[str, float] = field(default_factory=dict)
    best_threshold: float | None = None


def _load_json(path: Path) -> dict | None:
    try:
        obj = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def collect_evaluations(workdir: Path) -> list[Evaluation]:
    """Every result with an ``miou`` in ``eval/*.json`` (but the diagnoses) and ``pred/*/eval.json``,
    in pipeline order."""
    layout = Layout(workdir)
    eval_folder = layout.eval("_").parent
    pred_folder = layout.predictions("_").folder.parent
    found: list[Evaluation] = []
    for path in sorted(eval_folder.glob("*.json")):
        if is_diagnosis(path.stem):  # its own section: its chain's mIoUs are not a run's results
            continue
        found += _evaluations_of(path.stem, workdir_key(path, workdir), _load_json(path))
    for path in sorted(pred_folder.glob(f"*/{PRED_EVAL}")):
        found += _evaluations_of(f"pred_{path.parent.name}", workdir_key(path, workdir), _load_json(path))
    return sorted(found, key=lambda e: e.rank)


def _evaluations_of(stem: str, key: str, obj: dict | None) -> list[Evaluation]:
    # summaries such as demo.json have no numeric top-level miou: their numbers are in the others
    if not obj or not isinstance(obj.get("miou"), (int, float)):
        return []
    label, rank, split = stem, 5, ""
    for pattern, pattern_rank, template in EVAL_NAMES:
        match = re.fullmatch(pattern, stem)
        if match:
            fields = _with_set(match.groupdict(), stem, obj.get("split"))
            split, rank = fields.get("split") or str(obj.get("split", "")), pattern_rank
            threshold = obj.get("best_threshold")
            threshold = f", threshold {threshold:.2f}" if isinstance(threshold, (int, float)) else ""
            label = template.format(**{**fields, "split": split}, threshold=threshold,
                                    regions=_regions_text(obj.get("regions")))
            break
    main = Evaluation(key, label, float(obj["miou"]), dict(obj.get("per_class") or {}),
                      (rank, split != "train", split, stem), obj.get("images"),
                      dict(obj.get("sweep") or {}), obj.get("best_threshold"))
    crf = obj.get("crf")
    if not isinstance(crf, dict) or not isinstance(crf.get("miou"), (int, float)):
        return [main]
    # CAM + CRF sits between the CAMs and the random walk in the pipeline
    crf_eval = Evaluation(f"{key} (crf)", f"CAM + CRF ({split or stem})", float(crf["miou"]),
                          dict(crf.get("per_class") or {}), (1, *main.rank[1:]), obj.get("images"))
    return [main, crf_eval]


def _with_set(fields: dict[str, str], stem: str, split: object) -> dict[str, str]:
    """A CAM set's evaluation ``eval/<set>_<split>.json``: the file's own split says where
    the set's name ends (split names may hold ``_``); the default set ``cams`` goes unnamed."""
    if "set" not in fields:
        return fields
    if isinstance(split, str) and stem.endswith(f"_{split}") and stem != f"cams_{split}":
        return {"set": f" {stem[:-len(split) - 1]}", "split": split}
    return {"set": "", "split": stem[len("cams_"):]}


def _regions_text(regions: object) -> str:
    """IAL's confident regions of a round: ", regions 81.2 % precise, 40.3 % of pixels"."""
    if not isinstance(regions, dict) or not isinstance(regions.get("precision"), (int, float)):
        return ""
    return f", regions {regions['precision']:.1f} % precise, {regions.get('coverage', 0):.1f} % of pixels"


def class_names(data: LabelledDataset | None, evals: list[Evaluation]) -> tuple[str, ...]:
    """The dataset's classes, else those of an evaluation (its per-class IoU is written in
    class order, background first)."""
    if data is not None:
        return tuple(data.classes)
    for ev in evals:
        if ev.per_class:
            return tuple(ev.per_class)
    return ("background",)
