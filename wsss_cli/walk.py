"""The random walk of PSA (§3.4) on a trained AffinityNet, shared by random-walk and
diagnose: the image's affinity features on the stride grid, the CAM scores walked on them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from wsss_cli import ops
from wsss_cli.data.augment import normalize, resize
from wsss_cli.inference import with_background
from wsss_cli.models.affinity_net import AffinityNet
from wsss_cli.models.backbones import BACKBONES

# PSA's settings (infer_aff.py) for the ImageNet backbones, IRN's background threshold. A
# tiny AffinityNet from scratch leaks across boundaries on long walks, and its CAMs keep a
# floor of ~0.2-0.3 off the objects that (1 - max)^alpha cannot tell from an object's edge
# (docs/results.md#random-walk)
_PSA = dict(background="psa", alpha=16.0, bg_threshold=0.25, crf_power=1.0)
PRESETS: dict[str, dict[str, Any]] = {
    "psa": _PSA,
    "irn": _PSA,
    "tiny": dict(background="threshold", alpha=8.0, bg_threshold=0.6, crf_power=4.0),
}
# the walk length auto_logt gives a VOC-sized grid: PSA's 8; 32 times fewer steps for tiny
LOGT_ON_VOC = {"psa": 8, "irn": 8, "tiny": 3}
BACKGROUNDS = ("psa", "threshold")


def walk_preset(backbone: str) -> dict[str, Any]:
    """random-walk's preset for an AffinityNet on ``backbone``: background, alpha,
    bg_threshold, crf_power."""
    return PRESETS[BACKBONES.get(backbone).family]


def logt_on_voc(backbone: str) -> int:
    """:func:`auto_logt`'s walk length on a VOC-sized grid for an AffinityNet on ``backbone``."""
    return LOGT_ON_VOC[BACKBONES.get(backbone).family]


# PSA's logt = 8 (256 steps) was set for VOC images: ~500 x 375 px, a ~63 x 47 grid
_PSA_GRID_SIDE = (63 * 47) ** 0.5


def auto_logt(grid_h: int, grid_w: int, logt_on_voc: int = 8) -> int:
    """Walk length scaled to the grid: ``logt_on_voc`` on VOC-sized grids, fewer on small ones.

    A random walk spreads about sqrt(steps) cells, so keeping its reach at the same
    fraction of the image needs steps proportional to the grid's area:
    ``logt = logt_on_voc + 2 log2(side / side_VOC)`` (side = sqrt(h*w)), clamped to 1..10.
    """
    side = (grid_h * grid_w) ** 0.5
    return int(min(10, max(1, round(logt_on_voc + 2 * math.log2(side / _PSA_GRID_SIDE)))))


def auto_walk_scale(h: int, w: int) -> float:
    """Integer upscaling of images whose short side is under 256 px, towards 512 px (at most
    4); 1 for VOC-sized images (PSA's grid).

    On small images the stride-8 grid is too coarse for object boundaries (a 128 px image
    is a 16 x 16 grid); walking on the upscaled image is a finer stride in effect (4x: stride
    2), which IRN's stride 4 on VOC points at too (docs/results.md#random-walk).
    """
    short = min(h, w)
    return 1.0 if short >= 256 else float(max(1, min(4, round(512 / short))))


def walk_start(cams: np.ndarray, background: str, alpha: float, bg_threshold: float) -> np.ndarray:
    """Scores ``[1 + n, H, W]`` the walk starts from, background first, of CAMs ``[n, H, W]``.

    ``psa``: ``[(1 - max CAM)^alpha, CAMs]``, the background walked with the classes.
    ``threshold`` (IRN): ``[bg_threshold, CAMs / their max]``, a constant background.
    """
    if background == "psa":
        return with_background(cams, alpha)
    return with_threshold(cams, bg_threshold)


def with_threshold(cams: np.ndarray, threshold: float) -> np.ndarray:
    """``[n, H, W]`` maps -> ``[1 + n, H, W]``: each map divided by its maximum, a constant
    background ``threshold`` as channel 0."""
    peaks = cams.reshape(len(cams), -1).max(axis=1) if cams.size else np.ones(len(cams))
    scaled = cams / np.maximum(peaks, 1e-5)[:, None, None]
    return np.concatenate([np.full((1, *cams.shape[1:]), threshold), scaled]).astype(np.float32)


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
    model: AffinityNet, image: np.ndarray, cams: np.ndarray, settings: WalkSettings,
    device: torch.device, amp: bool = False,
) -> np.ndarray:
    """Walked scores ``[1 + n, H, W]`` of an RGB image ``[H, W, 3]`` and its CAMs ``[n, H, W]``.

    With the ``threshold`` background only the CAMs walk: each walked map is divided by
    its maximum and the constant background put back, as IRN does.
    """
    if settings.background == "psa":
        return walk_maps(model, image, with_background(cams, settings.alpha), settings, device, amp)
    # the walk is linear: dividing by the maximum before it as well would change nothing
    return with_threshold(walk_maps(model, image, cams, settings, device, amp), settings.bg_threshold)


def with_saliency(scores: np.ndarray, saliency: np.ndarray, power: float) -> np.ndarray:
    """Scores ``[1 + n, H, W]`` with the background channel times ``(2 (1 - saliency))^power``
    (saliency ``[H, W]`` in [0, 1]): unchanged where the saliency is 0.5, up to ``2^power``
    times where it is 0, none where it is 1."""
    scores = scores.copy()
    scores[0] *= np.power(2 * (1 - np.clip(saliency, 0, 1)), power)
    return scores


@torch.no_grad()
def walk_maps(
    model: AffinityNet, image: np.ndarray, maps: np.ndarray, settings: WalkSettings,
    device: torch.device, amp: bool = False,
) -> np.ndarray:
    """Maps ``[k, H, W]`` of an RGB image ``[H, W, 3]`` walked on its affinities ``[k, H, W]``.

    The walk runs on the stride grid of the image resized by ``settings.scale`` (None =
    :func:`auto_walk_scale`) for ``2^logt`` steps (None = :func:`auto_logt` of that grid).
    """
    h, w = image.shape[:2]
    scale = auto_walk_scale(h, w) if settings.scale is None else settings.scale
    sh, sw = scaled_size((h, w), scale)
    s = model.stride
    ph, pw = -sh % s, -sw % s
    features = affinity_features(model, image, scale, device, amp)
    scores = torch.from_numpy(maps).to(device)
    scores = F.interpolate(scores[None], (sh, sw), mode="bilinear", align_corners=False)
    scores = F.avg_pool2d(F.pad(scores, (0, pw, 0, ph)), s, s)[0]
    logt = settings.logt
    if logt is None:
        logt = auto_logt(*features.shape[-2:], settings.logt_on_voc)
    walked = ops.random_walk(scores, features, radius=settings.radius, beta=settings.beta, logt=logt)
    walked = F.interpolate(walked[None], (sh + ph, sw + pw), mode="bilinear", align_corners=False)
    walked = walked[:, :, :sh, :sw]
    if (sh, sw) != (h, w):
        walked = F.interpolate(walked, (h, w), mode="bilinear", align_corners=False)
    return walked[0].cpu().numpy()


@dataclass(frozen=True)
class WalkSettings:
    """How the walk runs (random-walk's options, resolved)."""

    background: str
    alpha: float
    bg_threshold: float
    beta: float
    radius: int
    logt: int | None = None
    logt_on_voc: int = 8
    scale: float | None = None
