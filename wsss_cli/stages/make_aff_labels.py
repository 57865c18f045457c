"""make-aff-labels: confident foreground / background regions from CAMs (PSA §3.2).

Two background scores ``(1 - max_c CAM)^alpha`` are stacked with the CAMs: with the low
alpha the background is strong (only the CAM peaks survive as foreground), with the
high alpha it is weak (only the surest background survives). After a dense CRF on each,
a pixel is class c where the low-alpha CRF says c != background, background where the
high-alpha CRF says background (or, with ``--saliency``, where the saliency map is low,
as OAA and DSRG take it), and 255 (unsure, no affinity label) elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from wsss_cli.data.dataset import LabelledDataset, open_dataset
from wsss_cli.data.io import write_palette_png
from wsss_cli.data.saliency import (
    SALIENCY_THRESHOLD,
    Saliency,
    saliency_option,
    saliency_threshold_option,
)
from wsss_cli.inference import Crf, with_background
from wsss_cli.options import option
from wsss_cli.stages.common import (
    PerImageConfig,
    crf_backend_option,
    crf_iters_option,
    fill_unset,
    jobs_option,
    method_preset,
    per_image_run,
    set_option,
)
from wsss_cli.workdir import ArtifactSet, Layout, Workdir, entry_name, read_cams

STAGE = "make-aff-labels"
PSA_ALPHAS = dict(alpha_low=4.0, alpha_high=32.0)  # PSA's infer_cls.py


@dataclass(frozen=True, kw_only=True)
class MakeAffLabelsConfig(PerImageConfig):
    alpha_low: float | None = option(None, "Background exponent of the strong background "
                                           "(confident foreground).", min=0, min_open=True,
                                     default_text="PSA's 4; 1 for make-pseudo --method "
                                                  "ial's seeds on tiny")
    alpha_high: float | None = option(None, "Background exponent of the weak background "
                                            "(confident background).", min=0, min_open=True,
                                      default_text="PSA's 32; SEAM's 24 for SEAM CAMs of an "
                                                   "ImageNet backbone")
    saliency: str | None = saliency_option("The confident background from saliency maps "
                                           "instead of the weak-background CRF (OAA, DSRG)")
    saliency_threshold: float = saliency_threshold_option(SALIENCY_THRESHOLD)
    crf_iters: int = crf_iters_option()
    crf_backend: str = crf_backend_option()
    jobs: int = jobs_option()
    cams: str = set_option(Layout.CAMS, "CAM set to read")
    out: str = set_option(Layout.AFF_LABELS, "Affinity-label set to write")


def crf_labels(image: np.ndarray, scores: np.ndarray, crf: Crf) -> np.ndarray:
    """argmax of the CRF posterior of ``scores`` ``[K, H, W]`` -> channel index ``[H, W]``.

    The scores go in unnormalised, as PSA's ``_crf_with_alpha`` does (the unary is
    ``-log`` of the clipped score).
    """
    return crf(image, scores).argmax(axis=0)


def affinity_label_map(
    image: np.ndarray, cams: np.ndarray, classes: np.ndarray, alpha_low: float,
    alpha_high: float, crf: Crf, background: np.ndarray | None = None,
) -> np.ndarray:
    """uint8 ``[H, W]``: 0 confident background, c confident class c, 255 unsure.

    ``background``: bool ``[H, W]``, the confident background (low saliency) in place of
    the high-alpha CRF's.
    """
    if len(classes) == 0:
        return np.zeros(image.shape[:2], np.uint8)
    channel_class = np.concatenate([[0], classes]).astype(np.uint8)
    low = with_background(cams, alpha_low)
    label_low = crf_labels(image, low, crf)
    if background is None:
        background = crf_labels(image, with_background(cams, alpha_high), crf) == 0
    label = np.where(label_low > 0, channel_class[label_low], 255).astype(np.uint8)
    label[background] = 0
    label[low.max(axis=0) < 1e-5] = 255  # no score at all: nothing to trust
    return label


def _one_image(data: LabelledDataset, cams: ArtifactSet, labels: ArtifactSet, image_id: str,
               cfg: MakeAffLabelsConfig, crf: Crf, saliency: Saliency | None) -> None:
    classes, scores = read_cams(cams.path(image_id))
    image = data.read_image(image_id)
    background = None if saliency is None else saliency(image_id, image) < cfg.saliency_threshold
    label = affinity_label_map(image, scores, classes, cfg.alpha_low, cfg.alpha_high,
                               crf, background)
    write_palette_png(labels.path(image_id), label)


def run(cfg: MakeAffLabelsConfig) -> Path:
    """Write ``WORKDIR/<out>/<id>.png`` for every image of the split."""
    data = open_dataset(cfg.data)
    layout = Layout(cfg.workdir)
    cfg = fill_unset(cfg, {**PSA_ALPHAS, **method_preset(cfg.workdir, cfg.cams, STAGE)})
    cams, labels = layout.cams(cfg.cams), layout.labels(cfg.out)
    ids = data.ids(cfg.split)
    saliency = None if cfg.saliency is None else Saliency.checked(cfg.saliency, data, ids)
    inputs = Workdir(cfg.workdir).producer_hashes(entry_name("dump-cams", cfg.cams, Layout.CAMS))
    with per_image_run(entry_name(STAGE, cfg.out, Layout.AFF_LABELS), cfg, data, ids, labels,
                       inputs) as job:
        crf = Crf.of(cfg)
        job.run_each(partial(_one_image, data, cams, labels, cfg=cfg, crf=crf, saliency=saliency),
                     crf.jobs(cfg.jobs))
    return labels.folder
