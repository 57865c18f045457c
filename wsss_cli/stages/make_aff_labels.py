"""make-aff-labels: confident foreground / background regions from CAMs (PSA §3.2).

Two background scores ``(1 - max_c CAM)^alpha`` are stacked with the CAMs: with the low
alpha the background is strong (only the CAM peaks survive as foreground), with the
high alpha it is weak (only the surest background survives). After a dense CRF on each,
a pixel is class c where the low-alpha CRF says c != background, background where the
high-alpha CRF says background, and 255 (unsure, no affinity label) elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed

from wsss_cli import ops
from wsss_cli.data.dataset import VocDataset
from wsss_cli.data.io import write_palette_png
from wsss_cli.runtime import Runtime
from wsss_cli.stages.common import (
    finish_per_image,
    pending_ids,
    start_stage,
    unhashed,
    upstream,
)
from wsss_cli.workdir import Shard, read_cams


@dataclass(frozen=True)
class CrfConfig:
    """PSA's ``crf_inference`` parameters."""

    iters: int = 10
    gauss_sxy: float = 3
    gauss_compat: float = 3
    bilateral_sxy: float = 80
    bilateral_srgb: float = 13
    bilateral_compat: float = 10


@dataclass(frozen=True)
class MakeAffLabelsConfig:
    data: Path
    workdir: Path = unhashed()
    split: str = "train"
    alpha_low: float = 4
    alpha_high: float = 32
    crf_iters: int = 10
    jobs: int = unhashed(1)
    shard: str | None = unhashed(None)
    overwrite: bool = unhashed(False)
    runtime: Runtime = Runtime()


def with_background(cams: np.ndarray, alpha: float) -> np.ndarray:
    """``[n, H, W]`` CAMs -> ``[1 + n, H, W]`` with ``(1 - max CAM)^alpha`` as channel 0."""
    peak = cams.max(axis=0) if len(cams) else np.zeros(cams.shape[1:], np.float32)
    background = np.power(1 - peak, alpha)[None]
    return np.concatenate([background, cams]).astype(np.float32)


def crf_labels(image: np.ndarray, scores: np.ndarray, crf: CrfConfig) -> np.ndarray:
    """argmax of the CRF posterior of ``scores`` ``[K, H, W]`` -> channel index ``[H, W]``.

    The scores go in unnormalised, as PSA's ``_crf_with_alpha`` does (the unary is
    ``-log`` of the clipped score).
    """
    posterior = ops.dense_crf(image, scores, iters=crf.iters, gauss_sxy=crf.gauss_sxy,
                              gauss_compat=crf.gauss_compat, bilateral_sxy=crf.bilateral_sxy,
                              bilateral_srgb=crf.bilateral_srgb,
                              bilateral_compat=crf.bilateral_compat)
    return posterior.argmax(axis=0)


def affinity_label_map(
    image: np.ndarray, cams: np.ndarray, classes: np.ndarray, alpha_low: float,
    alpha_high: float, crf: CrfConfig,
) -> np.ndarray:
    """uint8 ``[H, W]``: 0 confident background, c confident class c, 255 unsure."""
    if len(classes) == 0:
        return np.zeros(image.shape[:2], np.uint8)
    channel_class = np.concatenate([[0], classes]).astype(np.uint8)
    low = with_background(cams, alpha_low)
    high = with_background(cams, alpha_high)
    label_low = crf_labels(image, low, crf)
    label_high = crf_labels(image, high, crf)
    label = np.where(label_low > 0, channel_class[label_low], 255).astype(np.uint8)
    label[label_high == 0] = 0
    label[low.max(axis=0) < 1e-5] = 255  # no score at all: nothing to trust
    return label


def _one_image(data: VocDataset, cam_dir: Path, out_dir: Path, image_id: str,
               cfg: MakeAffLabelsConfig) -> None:
    classes, cams = read_cams(cam_dir / f"{image_id}.npz")
    image = data.read_image(image_id)
    label = affinity_label_map(image, cams, classes, cfg.alpha_low, cfg.alpha_high,
                               CrfConfig(iters=cfg.crf_iters))
    write_palette_png(out_dir / f"{image_id}.png", label)


def run(cfg: MakeAffLabelsConfig) -> Path:
    """Write ``WORKDIR/aff_labels/<id>.png`` for every image of the split."""
    data = VocDataset(cfg.data)
    ids = data.ids(cfg.split)
    workdir = Path(cfg.workdir)
    cam_dir, out_dir = workdir / "cams", workdir / "aff_labels"
    stage = start_stage("make-aff-labels", cfg, out_dir, [out_dir], cfg.overwrite,
                        upstream(workdir, "dump-cams"))
    output = lambda i: out_dir / f"{i}.png"  # noqa: E731
    todo = pending_ids(ids, Shard.parse(cfg.shard), output)
    stage.logger.info("%d images to do (%d in split %s), %d jobs", len(todo), len(ids),
                      cfg.split, cfg.jobs)
    jobs = Parallel(n_jobs=cfg.jobs, return_as="generator_unordered")(
        delayed(_one_image)(data, cam_dir, out_dir, i, cfg) for i in todo)
    for _ in cfg.runtime.progress(jobs, "make-aff-labels", total=len(todo)):
        pass
    finish_per_image(stage, ids, output)
    return out_dir
