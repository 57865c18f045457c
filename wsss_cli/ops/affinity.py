"""Pixel-pair affinity labels for training AffinityNet (PSA, Ahn & Kwak, CVPR 2018)."""

from __future__ import annotations

import numpy as np


def affinity_offsets(radius: int = 5) -> list[tuple[int, int]]:
    """The half-plane neighbour offsets ``(dy, dx)`` within ``radius``, in PSA's order.

    First ``(0, dx)`` for ``dx = 1 .. r-1``, then, row by row for ``dy = 1 .. r-1``, every
    ``(dy, dx)`` with ``dx = -(r-1) .. r-1`` and ``dy^2 + dx^2 < r^2``. Together with the
    mirrored offsets they cover every unordered pair of distinct pixels closer than ``radius``
    exactly once. Returns a list of ``P`` tuples (34 for ``radius = 5``).
    """
    if radius < 1:
        raise ValueError(f"radius must be >= 1, got {radius}")
    offsets = [(0, dx) for dx in range(1, radius)]
    offsets += [
        (dy, dx)
        for dy in range(1, radius)
        for dx in range(-radius + 1, radius)
        if dx * dx + dy * dy < radius * radius
    ]
    return offsets


def affinity_labels(
    label: np.ndarray, radius: int = 5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positive/negative pair labels between each pixel and its half-plane neighbours.

    ``label``: uint8 ``[h, w]`` (0 background, 1..C classes, 255 ignore).
    Returns ``(bg_pos, fg_pos, neg)``, bool ``[P, (h-r+1) * (w-2r+2)]`` with ``P`` =
    ``len(affinity_offsets(radius))``. Column ``n`` is the n-th pixel ``(y, x)``, row-major,
    of the "from" window; row ``k`` pairs pixel ``(y, x + r - 1)`` with
    ``(y + dy_k, x + r - 1 + dx_k)``. The window is PSA's: it keeps every neighbour of the
    whole half-plane inside the label, so no pair needs a border check.
    """
    if label.ndim != 2:
        raise ValueError(f"label must be [h, w], got shape {label.shape}")
    h, w = label.shape
    rm1 = radius - 1
    win_h, win_w = h - rm1, w - 2 * rm1
    if win_h < 1 or win_w < 1:
        raise ValueError(
            f"label {h}x{w} is too small for radius {radius}: needs h >= {radius}, "
            f"w >= {2 * radius - 1}"
        )
    offsets = affinity_offsets(radius)
    src = label[:win_h, rm1 : rm1 + win_w].reshape(1, -1)
    dst = np.stack(
        [label[dy : dy + win_h, rm1 + dx : rm1 + dx + win_w].reshape(-1) for dy, dx in offsets]
    )

    valid = (src != 255) & (dst != 255)
    same = src == dst
    bg_pos = same & (src == 0)
    fg_pos = same & valid & (src != 0)
    neg = ~same & valid
    return bg_pos, fg_pos, neg
