"""report: one self-contained HTML page summarising a workdir.

The page has the stages recorded in ``state.json`` (a failed one with its error), the
run's seed, device, versions and environment with each stage's settings, the training
curves (loss, val mIoU) of every model folder's ``metrics.jsonl``, the mIoU after every
evaluated stage (``WORKDIR/eval/*.json`` and ``WORKDIR/pred/*/eval.json``), the
per-class IoU of each, and for a few images of a split (and of ``val`` when it has
predictions) the image, CAM, affinity label, pseudo-label, prediction and ground truth
side by side, evenly spaced ones and the worst by IoU; with ``--images`` also the
images of a ``predict --images`` folder beside their predictions. Pictures are embedded
as data URIs and the style is inline, so the file can be mailed or archived on its own.
What is shown is read by :mod:`wsss_cli.report.collect`; how, by
:mod:`wsss_cli.report.render` and its template.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from wsss_cli.options import option
from wsss_cli.report.collect import collect
from wsss_cli.report.render import render
from wsss_cli.report.samples import FOLDER_LIMIT
from wsss_cli.runtime import Runtime
from wsss_cli.stages.common import workdir_option
from wsss_cli.workdir import Layout, write_bytes


@dataclass(frozen=True, kw_only=True)
class ReportConfig:
    workdir: Path = workdir_option()
    data: Path | None = option(None, "Dataset root for the images and ground truth.", exists=True,
                               file_okay=False, default_text="the one recorded in WORKDIR/config.toml")
    split: str = option("train", "Split whose images are shown.")
    samples: int = option(8, "Images shown side by side.", min=1)
    worst: int = option(4, "Worst images by IoU shown per split (0: none).", min=0)
    images: Path | None = option(None, f"A folder of images given to predict --images: shows up to "
                                 f"{FOLDER_LIMIT} of them beside their predictions.",
                                 exists=True, file_okay=False)
    out: Path | None = option(None, "HTML file.", dir_okay=False, default_text="WORKDIR/report.html")
    runtime: Runtime = field(default=Runtime(), metadata={"cli": False})


def run(cfg: ReportConfig) -> Path:
    """Write the report (default ``WORKDIR/report.html``) and return its path."""
    report = collect(Path(cfg.workdir), cfg.data, cfg.split, cfg.samples, progress=cfg.runtime.progress,
                     images=cfg.images, worst=cfg.worst)
    out = Path(cfg.out) if cfg.out is not None else Layout(cfg.workdir).report
    write_bytes(out, render(report).encode())
    return out
