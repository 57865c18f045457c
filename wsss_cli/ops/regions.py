"""Superpixel-level class regions: superpixels whose pixels agree on one class."""

from __future__ import annotations

import numpy as np


def superpixel_regions(probs: np.ndarray, superpixels: np.ndarray, ratio: float = 0.8) -> np.ndarray:
    """The class of every superpixel whose pixels mostly agree on one, else -1.

    ``probs``: float ``[K, H, W]`` class distribution or scores (only its per-pixel argmax
    matters; ties go to the lowest channel, as ``np.argmax``). ``superpixels``: integer
    ``[H, W]`` ids ``0 .. S-1`` with ``S = max id + 1``. Returns int64 ``[S]``: channel ``c``
    when at least ``ratio`` of the superpixel's pixels have argmax ``c`` (the fraction is
    compared as ``count / total >= ratio``, so a fraction equal to ``ratio`` passes), else -1;
    also -1 for an id with no pixels. ``ratio`` must lie in ``(0.5, 1]``.
    """
    # above one half at most one class can qualify, so the answer is never a tie
    if not 0.5 < ratio <= 1:
        raise ValueError(f"ratio must be in (0.5, 1], got {ratio}")
    if probs.ndim != 3:
        raise ValueError(f"probs must be [K, H, W], got shape {probs.shape}")
    if superpixels.shape != probs.shape[1:]:
        raise ValueError(f"superpixels shape {superpixels.shape} != probs spatial shape {probs.shape[1:]}")
    if not np.issubdtype(superpixels.dtype, np.integer):
        raise ValueError(f"superpixels must be integer ids, got {superpixels.dtype}")
    if superpixels.size == 0:
        return np.zeros(0, dtype=np.int64)
    if superpixels.min() < 0:
        raise ValueError("superpixel ids must be >= 0")
    k = probs.shape[0]
    s = int(superpixels.max()) + 1
    labels = probs.argmax(0)
    # one bincount over (superpixel, class) pairs gives the whole class histogram per superpixel
    counts = np.bincount((superpixels.astype(np.int64) * k + labels).ravel(), minlength=s * k)
    counts = counts.reshape(s, k)
    total = counts.sum(1)
    best = counts.argmax(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        # a correctly rounded division matches a decimal ratio exactly at the boundary
        share = counts[np.arange(s), best] / total
    return np.where((total > 0) & (share >= ratio), best, -1).astype(np.int64)
