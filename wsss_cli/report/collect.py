"""What the report shows, read from a workdir into plain dataclasses (no HTML here).

The stages recorded in ``state.json`` (a failed one with its error), their settings,
versions and environment with ``config.toml``'s options (device, seed), the training
curves of every model folder's ``metrics.jsonl``, every evaluation with an mIoU
(``WORKDIR/eval/*.json`` and ``WORKDIR/pred/*/eval.json``) with its per-class IoU and
threshold sweep, the diagnoses of ``wsss diagnose`` (``WORKDIR/eval/diagnose_*.json``), the tables of
``wsss compare`` (``WORKDIR/eval/compare_*.json``),
and sample rows as data URIs: for a few evenly spaced images of a split
(and of ``val`` when it has predictions) the image, CAM, affinity label, pseudo-label,
prediction and ground truth, the split's worst images by per-image mIoU, and the images
of a ``predict --images`` folder beside their predictions. A missing or unreadable
artifact becomes a placeholder picture, never an error: the report is most useful
exactly when a run is half done.

This module puts the page's parts together; what each is, and how it is read, lives in
:mod:`~wsss_cli.report.runinfo` (stages, settings, run facts, the dataset),
:mod:`~wsss_cli.report.evaluations`, :mod:`~wsss_cli.report.diagnosis`,
:mod:`~wsss_cli.report.curves` (training curves),
:mod:`~wsss_cli.report.samples` (which images, which artifacts) and
:mod:`~wsss_cli.report.pictures` (thumbnails, heatmaps, label colours).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from wsss_cli.report.comparison import Comparison, collect_comparisons
from wsss_cli.report.curves import TrainingCurve, training_curves
from wsss_cli.report.diagnosis import Diagnosis, collect_diagnoses
from wsss_cli.report.evaluations import Evaluation, class_names, collect_evaluations
from wsss_cli.report.pictures import LabelClass, label_classes
from wsss_cli.report.runinfo import (
    Fact,
    StageEntry,
    read_config,
    read_state,
    resolve_data,
    run_facts,
    stage_entries,
)
from wsss_cli.report.samples import SampleSet, folder_samples, has_predictions, split_samples


@dataclass
class ReportData:
    """Everything the page shows."""

    workdir: Path  # resolved
    dataset: Path | None  # resolved; None = no dataset found
    split: str
    generated: str
    stages: list[StageEntry]
    evaluations: list[Evaluation]
    classes: list[LabelClass]
    sample_sets: list[SampleSet]
    facts: list[Fact] = field(default_factory=list)
    curves: list[TrainingCurve] = field(default_factory=list)
    diagnoses: list[Diagnosis] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)

    @property
    def stage_seconds(self) -> float:
        return sum(s.seconds for s in self.stages if s.seconds is not None)

    @property
    def failed(self) -> list[StageEntry]:
        return [s for s in self.stages if s.status == "failed"]


def collect(workdir: Path, data: Path | None = None, split: str = "train", samples: int = 8,
            progress: Callable[[Iterable[str], str], Iterable[str]] | None = None,
            images: Path | None = None, worst: int = 4) -> ReportData:
    """Read ``workdir`` (and the dataset, see :func:`resolve_data`) into a :class:`ReportData`.

    Sample rows: those of ``images`` (a ``predict --images`` folder) when given, ``samples``
    evenly spaced images of ``split`` and its ``worst`` images by IoU, and the same of
    ``val`` when the dataset has it and ``WORKDIR/pred/val`` holds predictions.
    """
    workdir = Path(workdir)
    state = read_state(workdir)
    config = read_config(workdir)
    dataset = resolve_data(data, workdir)
    evals = collect_evaluations(workdir)
    names = class_names(dataset, evals)
    step = progress if progress is not None else (lambda items, desc: items)
    sets = []
    if images is not None:
        sets.append(folder_samples(workdir, Path(images), names, config, step))
    sets.append(split_samples(workdir, dataset, split, names, samples, worst, step))
    if split != "val" and dataset is not None and has_predictions(workdir, dataset, "val"):
        sets.append(split_samples(workdir, dataset, "val", names, samples, worst, step, all_columns=False))
    return ReportData(
        workdir=workdir.resolve(), dataset=dataset.root.resolve() if dataset else None, split=split,
        generated=time.strftime("%Y-%m-%d %H:%M:%S"), stages=stage_entries(state, config),
        evaluations=evals, classes=label_classes(names), sample_sets=sets,
        facts=run_facts(state, config), curves=training_curves(workdir, state, config),
        diagnoses=collect_diagnoses(workdir), comparisons=collect_comparisons(workdir))
