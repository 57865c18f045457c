"""The diagnoses of a workdir: every ``WORKDIR/eval/diagnose_<split>.json`` that ``wsss
diagnose`` wrote (:mod:`wsss_cli.stages.diagnose`): the affinity labels' shares and
precisions, AffinityNet's pair AUC overall and by distance, and the chain CAM, CAM + CRF,
walk, walk + CRF. A file that cannot be read as one becomes a note on the page, never an
error. These files are not evaluations (:mod:`~wsss_cli.report.evaluations` skips them).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsss_cli.report.runinfo import workdir_key
from wsss_cli.workdir import Layout

STEM = re.compile(r"diagnose_(?P<split>.+)")  # eval/<stem>.json
UNREADABLE = "unreadable: not a result of wsss diagnose (run it again)"
# the affinity labels' kinds: (label, share key, precision key or None)
LABEL_KINDS = (
    ("confident foreground", "foreground_share", "foreground_precision"),
    ("confident background", "background_share", "background_precision"),
    ("unsure", "unsure_share", None),
)


class _Malformed(ValueError):
    """A diagnose file whose content is not what ``wsss diagnose`` writes."""


@dataclass
class LabelKind:
    """One kind of pixel of the affinity labels."""

    name: str
    share: float | None  # % of the pixels the ground truth does not ignore
    precision: float | None  # % of them the ground truth agrees with; None for unsure


@dataclass
class ChainLink:
    """One link of the chain against the ground truth."""

    name: str
    miou: float | None
    inside: float | None  # % of object pixels labelled with their class
    outside: float | None  # % of background pixels labelled as an object


@dataclass
class Diagnosis:
    """One ``diagnose_<split>.json``; ``note`` set (and nothing else) when it is unreadable."""

    key: str  # the file, relative to the workdir
    split: str
    note: str | None = None
    images: int | None = None
    start: str | None = None  # the walk's starting scores
    labels: list[LabelKind] | None = None  # None: not measured
    auc: float | None = None
    auc_by_distance: list[tuple[str, float | None]] = field(default_factory=list)
    pairs: tuple[int, int] | None = None  # (same class, different classes)
    measured_auc: bool = False
    chain: list[ChainLink] | None = None  # None: not measured

    @property
    def best_miou(self) -> float | None:
        values = [link.miou for link in self.chain or () if link.miou is not None]
        return max(values) if len(values) > 1 else None


def is_diagnosis(stem: str) -> bool:
    """Whether ``eval/<stem>.json`` is a diagnose result."""
    return STEM.fullmatch(stem) is not None


def collect_diagnoses(workdir: Path) -> list[Diagnosis]:
    """Every ``eval/diagnose_*.json``, in name order."""
    folder = Layout(workdir).eval("_").parent
    found = []
    for path in sorted(folder.glob("diagnose_*.json")):
        match = STEM.fullmatch(path.stem)
        if match:
            found.append(read_diagnosis(path, match["split"], workdir_key(path, workdir)))
    return found


def read_diagnosis(path: Path, split: str, key: str) -> Diagnosis:
    """The diagnosis in ``path``; one with only a note when it is not one."""
    try:
        obj = json.loads(path.read_text())
        return _parse(obj, split, key)
    except (OSError, ValueError, RecursionError):  # ValueError: undecodable, not JSON, _Malformed
        return Diagnosis(key, split, note=UNREADABLE)


def _parse(obj: Any, split: str, key: str) -> Diagnosis:
    obj = _mapping(obj)
    parts = ("affinity_labels", "affinity_net", "chain")
    if not any(obj.get(p) is not None for p in parts):
        raise _Malformed("nothing measured")
    start = obj.get("start")
    result = Diagnosis(key, split, images=_int(obj.get("images")),
                       start=start if isinstance(start, str) else None)
    if isinstance(obj.get("split"), str):
        result.split = obj["split"]
    labels = obj.get("affinity_labels")
    if labels is not None:
        labels = _mapping(labels)
        result.labels = [LabelKind(name, _number(labels.get(share)),
                                   _number(labels.get(precision)) if precision else None)
                         for name, share, precision in LABEL_KINDS]
    net = obj.get("affinity_net")
    if net is not None:
        net = _mapping(net)
        result.measured_auc = True
        result.auc = _number(net.get("auc"))
        by_distance = _mapping(net.get("auc_by_distance") or {})
        result.auc_by_distance = [(str(d), _number(v)) for d, v in by_distance.items()]
        pairs = net.get("pairs")
        if pairs is not None:
            pairs = _mapping(pairs)
            same, different = _int(pairs.get("same_class")), _int(pairs.get("different_class"))
            result.pairs = (same, different) if same is not None and different is not None else None
    chain = obj.get("chain")
    if chain is not None:
        result.chain = [ChainLink(str(name), _number(link.get("miou")), _number(link.get("inside_objects")),
                                  _number(link.get("outside_objects")))
                        for name, link in ((n, _mapping(v)) for n, v in _mapping(chain).items())]
    return result


def _mapping(value: Any) -> dict:
    if not isinstance(value, dict):
        raise _Malformed(f"expected an object, got {type(value).__name__}")
    return value


def _number(value: Any) -> float | None:
    """A finite number or None (a share of nothing); anything else is malformed."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _Malformed(f"expected a number, got {value!r}")
    return float(value)


def _int(value: Any) -> int | None:
    number = _number(value)
    return None if number is None else int(number)
