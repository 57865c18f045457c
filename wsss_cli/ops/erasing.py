"""The erasing family's tensor operations: Hide-and-Seek's grid hiding, ACoL's feature
erasing, mixup of a batch, and the per-map min-max normalisation they share."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

# Hide-and-Seek's grid sizes at its 224 px training input (kkanshul/Hide-and-Seek); 0 = no hiding
HIDE_GRIDS_224 = (0, 16, 32, 44, 56)


def hide_patches(images: Tensor, rng: np.random.Generator,
                 grid_sizes: tuple[int, ...] = HIDE_GRIDS_224, prob: float = 0.5) -> Tensor:
    """Hide-and-Seek: each image's grid cells hidden (set to 0) with probability ``prob``.

    ``images``: float ``[B, C, H, W]``, normalised so that 0 is the dataset mean. Per image
    one cell size ``s`` is drawn uniformly from ``grid_sizes``; ``s = 0`` leaves it whole,
    otherwise the image is cut into ``s x s`` cells from its top-left corner (the last row
    and column of cells may be smaller) and each cell is hidden independently. Returns a new
    tensor; ``rng`` makes the draws, so a run can be repeated.
    """
    if not 0 <= prob <= 1:
        raise ValueError(f"prob must be in [0, 1], got {prob}")
    b, _, h, w = images.shape
    keep = np.ones((b, 1, h, w), np.float32)
    for i in range(b):
        size = int(grid_sizes[rng.integers(len(grid_sizes))])
        if size <= 0:
            continue
        hidden = rng.random((-(-h // size), -(-w // size))) < prob
        keep[i, 0][np.kron(hidden, np.ones((size, size), bool))[:h, :w]] = 0
    return images * torch.from_numpy(keep).to(images.device, images.dtype)


def scaled_grid_sizes(crop: int, grid_sizes: tuple[int, ...] = HIDE_GRIDS_224) -> tuple[int, ...]:
    """Hide-and-Seek's cell sizes for a ``crop`` px input: scaled by ``crop / 224``, rounded,
    at least 1 px (0 stays 0)."""
    return tuple(0 if s == 0 else max(1, round(s * crop / 224)) for s in grid_sizes)


def minmax_normalize(maps: Tensor, eps: float = 1e-5) -> Tensor:
    """Each map of ``[..., H, W]`` scaled to [0, 1]: ``(m - min) / (max - min + eps)``."""
    low = maps.amin(dim=(-2, -1), keepdim=True)
    high = maps.amax(dim=(-2, -1), keepdim=True)
    return (maps - low) / (high - low + eps)


def region_mask(normed: Tensor, classes: Tensor, threshold: float) -> Tensor:
    """Where any chosen class's normalised map reaches ``threshold``: float ``[B, 1, h, w]``
    of 0/1, no gradient.

    ``normed``: ``[B, C, h, w]`` maps in [0, 1]; ``classes``: ``[B, C]``, > 0 for the
    classes that count (an image's labels, or its predicted classes at inference).
    """
    chosen = (classes > 0).to(normed.dtype)[:, :, None, None]
    return ((normed.detach() >= threshold).to(normed.dtype) * chosen).amax(dim=1, keepdim=True)


def predicted_classes(logits: Tensor) -> Tensor:
    """``[B, C]`` 0/1: the classes with logit > 0, or the top one where none is."""
    positive = logits > 0
    top = torch.zeros_like(logits).scatter_(1, logits.argmax(1, keepdim=True), 1.0)
    return torch.where(positive.any(1, keepdim=True), positive.to(logits.dtype), top)


def erase_by_maps(features: Tensor, maps: Tensor, classes: Tensor, threshold: float = 0.6) -> Tensor:
    """ACoL's erasing: ``features`` ``[B, D, h, w]`` zeroed where a chosen class's map
    (``maps`` ``[B, C, h, w]``), min-max normalised, is at least ``threshold``
    (``region_mask``); ``classes`` ``[B, C]``: the image's labels in training, the
    predicted classes at inference."""
    return features * (1 - region_mask(minmax_normalize(maps.detach()), classes, threshold))


def mixup(images: Tensor, labels: Tensor, rng: np.random.Generator,
          alpha: float = 1.0) -> tuple[Tensor, Tensor]:
    """Mixup (Zhang et al. 2018): each image and label vector mixed with those of another
    image of the batch, ``lam * a + (1 - lam) * b`` with one ``lam ~ Beta(alpha, alpha)``
    per batch and a random pairing (a permutation of the batch), drawn by ``rng``.

    ``images``: ``[B, C, H, W]``; ``labels``: ``[B, K]``; returns both mixed, same shapes.
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    lam = float(rng.beta(alpha, alpha))
    order = torch.from_numpy(rng.permutation(images.shape[0])).to(images.device)
    return lam * images + (1 - lam) * images[order], lam * labels + (1 - lam) * labels[order]
