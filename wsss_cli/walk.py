"""The random walk of PSA (§3.4) on a trained AffinityNet, shared by random-walk and
diagnose: the image's affinity features on the stride grid, the CAM scores walked on them.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from wsss_cli import ops
from wsss_cli.data.augment import normalize, resize
from wsss_cli.inference import with_background
from wsss_cli.models.affinity_net import AffinityNet

# PSA's background exponent 16 suits ImageNet-pretrained CAMs, near 0 off the objects; a
# tiny net from scratch leaves a CAM floor of ~0.2-0.3 there (docs/results.md#random-walk)
WALK_ALPHA = {"tiny": 8.0}
PSA_WALK_ALPHA = 16.0


def default_alpha(backbone: str) -> float:
    """The walk's background exponent for an AffinityNet on ``backbone``."""
    return WALK_ALPHA.get(backbone, PSA_WALK_ALPHA)

# PSA's logt = 8 (256 steps) was set for VOC images: ~500 x 375 px, a ~63 x 47 grid
_PSA_GRID_SIDE = (63 * 47) ** 0.5


def auto_logt(grid_h: int, grid_w: int) -> int:
    """Walk length scaled to the grid: PSA's logt 8 on VOC-sized grids, fewer on small ones.

    A random walk spreads about sqrt(steps) cells, so keeping its reach at the same
    fraction of the image needs steps proportional to the grid's area:
    ``logt = 8 + 2 log2(side / side_VOC)`` (side = sqrt(h*w)), clamped to 1..10
    (measured: docs/results.md#random-walk).
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
def affinity_features(model: AffinityNet, image: np.ndarray, scale: float, device: torch.device,
                      amp: bool = False) -> torch.Tensor:
    """AffinityNet's features ``[C, h, w]`` (float32) of an RGB image ``[H, W, 3]`` resized by
    ``scale`` and padded at the bottom and right to a multiple of the stride."""
    sh, sw = scaled_size(image.shape[:2], scale)
    s = model.stride
    x = torch.from_numpy(normalize(resize(image, (sh, sw))))[None].to(device)
    x = F.pad(x, (0, -sw % s, 0, -sh % s))
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        return model(x)[0].float()


def scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


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
    sh, sw = scaled_size((h, w), scale)
    s = model.stride
    ph, pw = -sh % s, -sw % s
    features = affinity_features(model, image, scale, device, amp)
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
