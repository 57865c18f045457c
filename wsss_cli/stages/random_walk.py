"""random-walk: CAMs propagated by AffinityNet's affinities -> pseudo-label PNGs (PSA §3.4).

Per image (PSA's ``infer_aff.py``): the full image is padded to a multiple of the
stride, AffinityNet gives features f on the stride grid, the scores
``[(1 - max CAM)^alpha, CAMs]`` are average-pooled to that grid and walked with
``ops.random_walk`` (beta, logt), upsampled, cropped and arg-maxed. Optionally a dense
CRF on the walked scores sharpens the boundaries.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from wsss_cli import ops
from wsss_cli.data.augment import normalize, resize
from wsss_cli.data.dataset import VocDataset
from wsss_cli.inference import LabelTask, prepare_inference, write_labels
from wsss_cli.models.affinity_net import AffinityNet
from wsss_cli.runtime import Runtime
from wsss_cli.stages.common import (
    finish_per_image,
    pending_ids,
    start_stage,
    unhashed,
    upstream,
)
from wsss_cli.stages.make_aff_labels import with_background
from wsss_cli.stages.train_aff import load_affinity_net
from wsss_cli.workdir import Shard, file_digest, read_cams


@dataclass(frozen=True)
class RandomWalkConfig:
    data: Path
    workdir: Path = unhashed()
    split: str = "train"
    aff_model: Path | None = None  # default WORKDIR/aff/model.pt
    alpha: float | None = None  # None = WALK_ALPHA of the AffinityNet's backbone
    beta: float = 8
    logt: int | None = None  # None = auto_logt(grid)
    walk_scale: float | None = None  # None = auto_walk_scale(image)
    radius: int = 5
    crf: bool = True
    crf_iters: int = 10
    out: str = "pseudo"  # folder name under WORKDIR
    amp: bool = True
    workers: int = unhashed(2)
    jobs: int = unhashed(1)
    shard: str | None = unhashed(None)
    overwrite: bool = unhashed(False)
    runtime: Runtime = Runtime()


# PSA's background exponent 16 suits ImageNet-pretrained CAMs, near 0 off the objects;
# a tiny net trained from scratch leaves a CAM floor of ~0.2-0.3 there (best CAM thresholds
# 0.37-0.46), which (1 - 0.3)^16 = 0.003 cannot outweigh. Measured, make-pseudo mIoU with
# alpha 8 vs 16: toy 83.62 vs 83.39, held-out (bench/heldout_data.py) 62.05 vs 59.80.
WALK_ALPHA = {"tiny": 8.0}
PSA_WALK_ALPHA = 16.0

# PSA's logt = 8 (256 steps) was set for VOC images: ~500 x 375 px, a ~63 x 47 grid
_PSA_GRID_SIDE = (63 * 47) ** 0.5


def auto_logt(grid_h: int, grid_w: int) -> int:
    """Walk length scaled to the grid: PSA's logt 8 on VOC-sized grids, fewer on small ones.

    A random walk spreads about sqrt(steps) cells, so keeping its reach at the same
    fraction of the image needs steps proportional to the grid's area:
    ``logt = 8 + 2 log2(side / side_VOC)`` (side = sqrt(h*w)), clamped to 1..10. Measured
    on 128 px images (16 x 16 grid), walk + CRF: logt 4 gave 80.8 mIoU, logt 8 gave 76.2.
    """
    side = (grid_h * grid_w) ** 0.5
    return int(min(10, max(1, round(8 + 2 * math.log2(side / _PSA_GRID_SIDE)))))


def auto_walk_scale(h: int, w: int, short_side: int = 256) -> float:
    """Integer upscaling that brings the image's short side to ``short_side`` (1 for VOC).

    On small images the stride-8 grid is too coarse for thin parts (a 10 px wide object
    is one cell); walking on the upscaled image is IRN's finer stride-4 grid in effect.
    """
    return float(max(1, min(4, round(short_side / min(h, w)))))


@torch.no_grad()
def walk_scores(
    model: AffinityNet, image: np.ndarray, cams: np.ndarray, alpha: float, beta: float,
    logt: int | None, radius: int, device: torch.device, amp: bool = False,
    scale: float | None = None,
) -> np.ndarray:
    """Walked scores ``[1 + n, H, W]`` of an RGB image ``[H, W, 3]`` and its CAMs ``[n, H, W]``.

    The walk runs on the stride grid of the image resized by ``scale`` (None =
    :func:`auto_walk_scale`); ``logt`` None = :func:`auto_logt` of that grid.
    """
    h, w = image.shape[:2]
    scale = auto_walk_scale(h, w) if scale is None else scale
    sh, sw = max(1, round(h * scale)), max(1, round(w * scale))
    s = model.stride
    ph, pw = -sh % s, -sw % s
    x = torch.from_numpy(normalize(resize(image, (sh, sw))))[None].to(device)
    x = F.pad(x, (0, pw, 0, ph))
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        features = model(x)[0].float()
    scores = torch.from_numpy(with_background(cams, alpha)).to(device)
    scores = F.interpolate(scores[None], (sh, sw), mode="bilinear", align_corners=False)
    scores = F.avg_pool2d(F.pad(scores, (0, pw, 0, ph)), s, s)[0]
    if logt is None:
        logt = auto_logt(*features.shape[-2:])
    walked = ops.random_walk(scores, features, radius=radius, beta=beta, logt=logt)
    walked = F.interpolate(walked[None], (sh + ph, sw + pw), mode="bilinear", align_corners=False)
    walked = walked[:, :, :sh, :sw]
    if (sh, sw) != (h, w):
        walked = F.interpolate(walked, (h, w), mode="bilinear", align_corners=False)
    return walked[0].cpu().numpy()


def run(cfg: RandomWalkConfig) -> Path:
    """Write ``WORKDIR/<out>/<id>.png`` (VOC palette, image size) for the split."""
    data = VocDataset(cfg.data)
    ids = data.ids(cfg.split)
    workdir = Path(cfg.workdir)
    model_path = Path(cfg.aff_model or workdir / "aff" / "model.pt")
    model, backbone = load_affinity_net(model_path)
    if cfg.alpha is None:
        cfg = replace(cfg, alpha=WALK_ALPHA.get(backbone, PSA_WALK_ALPHA))
    out_dir = workdir / cfg.out
    stage = start_stage(f"random-walk:{cfg.out}" if cfg.out != "pseudo" else "random-walk",
                        cfg, out_dir, [out_dir], cfg.overwrite,
                        {**upstream(workdir, "dump-cams"), "model_digest": file_digest(model_path)})
    output = lambda i: out_dir / f"{i}.png"  # noqa: E731
    todo = pending_ids(ids, Shard.parse(cfg.shard), output)
    stage.logger.info("%d images to do (%d in split %s)", len(todo), len(ids), cfg.split)

    device, amp, loader = prepare_inference(model, cfg.runtime, cfg.amp, data, todo, cfg.workers)

    def walked() -> Iterator[LabelTask]:
        for image_id, image in loader:
            image = image.numpy()
            classes, cams = read_cams(workdir / "cams" / f"{image_id}.npz")
            scores = walk_scores(model, image, cams, cfg.alpha, cfg.beta, cfg.logt, cfg.radius,
                                 device, amp, cfg.walk_scale)
            yield output(image_id), image, scores, classes

    write_labels(walked(), cfg.crf, cfg.crf_iters, cfg.jobs,
                 lambda items: cfg.runtime.progress(items, "random-walk", total=len(todo)))
    finish_per_image(stage, ids, output)
    return out_dir
