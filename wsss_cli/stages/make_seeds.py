"""make-seeds: SEC's localisation cues from CAMs, ``<out>/<id>.png`` (0 background, c class,
255 unknown) for ``train-seg --loss sec``.

A class is seeded where its CAM exceeds ``fg_ratio`` times its maximum (SEC's 0.2); the
background where the largest CAM is below ``bg_threshold`` (``--bg-source cam``) or
where a saliency map is below ``saliency_threshold`` (``--bg-source saliency``); where
cues overlap the smaller one wins, as SEC (``ops.sec_seeds``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from wsss_cli import ops
from wsss_cli.data.dataset import LabelledDataset, open_dataset
from wsss_cli.data.io import image_size, write_palette_png
from wsss_cli.data.saliency import (
    SALIENCY_THRESHOLD,
    Saliency,
    saliency_option,
    saliency_threshold_option,
)
from wsss_cli.errors import WsssError
from wsss_cli.options import default_of, option
from wsss_cli.stages.common import PerImageConfig, jobs_option, per_image_run, set_option
from wsss_cli.workdir import ArtifactSet, Layout, Workdir, entry_name, read_cams

STAGE = "make-seeds"


@dataclass(frozen=True, kw_only=True)
class MakeSeedsConfig(PerImageConfig):
    fg_ratio: float = option(default_of(ops.sec_seeds, "fg_ratio"), "A class's seed: where its "
                                                                   "CAM exceeds this share of its "
                                                                   "maximum (SEC's).",
                             min=0, max=1, min_open=True)
    bg_source: str = option("cam", "Background cue: where every CAM is low, or where a "
                                   "saliency map is low (--saliency).", choices=("cam", "saliency"))
    bg_threshold: float = option(0.1, "--bg-source cam: background where the largest CAM is "
                                      "below this.", min=0, max=1)
    saliency: str | None = saliency_option("--bg-source saliency's maps")
    saliency_threshold: float = saliency_threshold_option(SALIENCY_THRESHOLD)
    jobs: int = jobs_option("the seed maps")
    cams: str = set_option(Layout.CAMS, "CAM set to read")
    out: str = set_option(Layout.SEEDS, "Seed set to write")


def run(cfg: MakeSeedsConfig) -> Path:
    """Write ``WORKDIR/<out>/<id>.png`` for every image of the split."""
    data = open_dataset(cfg.data)
    ids = data.ids(cfg.split)
    saliency = _saliency(cfg, data, ids)
    layout = Layout(cfg.workdir)
    cams, seeds = layout.cams(cfg.cams), layout.labels(cfg.out)
    inputs = Workdir(cfg.workdir).producer_hashes(entry_name("dump-cams", cfg.cams, Layout.CAMS))
    with per_image_run(entry_name(STAGE, cfg.out, Layout.SEEDS), cfg, data, ids, seeds,
                       inputs) as job:
        job.run_each(partial(_one_image, data, cams, seeds, cfg=cfg, saliency=saliency), cfg.jobs)
    return seeds.folder


def _saliency(cfg: MakeSeedsConfig, data: LabelledDataset, ids: list[str]) -> Saliency | None:
    if cfg.bg_source != "saliency":
        return None
    if cfg.saliency is None:
        raise WsssError("--bg-source saliency needs --saliency DIR|spectral|fine-grained")
    return Saliency.checked(cfg.saliency, data, ids)


def _one_image(data: LabelledDataset, cams: ArtifactSet, seeds: ArtifactSet, image_id: str,
               cfg: MakeSeedsConfig, saliency: Saliency | None) -> None:
    classes, scores = read_cams(cams.path(image_id))
    if saliency is not None:
        background = saliency(image_id, data.read_image(image_id)) < cfg.saliency_threshold
    else:
        top = scores.max(0) if len(classes) else np.zeros(image_size(data.image_path(image_id)))
        background = top < cfg.bg_threshold
    write_palette_png(seeds.path(image_id), ops.sec_seeds(scores, classes, background, cfg.fg_ratio))
