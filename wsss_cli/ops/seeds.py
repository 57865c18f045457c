"""SEC's localisation cues: sparse seed maps from CAMs and a background mask."""

from __future__ import annotations

import numpy as np


def sec_seeds(cams: np.ndarray, classes: np.ndarray, background: np.ndarray,
              fg_ratio: float = 0.2) -> np.ndarray:
    """A seed map uint8 ``[H, W]``: 0 background, ``c`` class ``c``, 255 unknown.

    ``cams``: float ``[n, H, W]`` of the 1-based ``classes`` ``[n]``; class ``c`` is seeded
    where its CAM exceeds ``fg_ratio`` times its maximum (a map that is 0 everywhere seeds
    nothing); ``background``: bool ``[H, W]``, the background cue. Where cues overlap, the
    one with the smaller area wins (the cues are painted from the largest area to the
    smallest, the background taking part as one more cue), as SEC resolves conflicts.
    """
    if cams.shape[0] != len(classes):
        raise ValueError(f"{cams.shape[0]} CAMs for {len(classes)} classes")
    if background.shape != cams.shape[1:] and len(classes):
        raise ValueError(f"background {background.shape} differs from the CAMs' {cams.shape[1:]}")
    cues = [(np.asarray(background, bool), 0)]
    for cam, c in zip(cams, classes, strict=True):
        peak = float(cam.max())
        cues.append((cam > fg_ratio * peak if peak > 0 else np.zeros(cam.shape, bool), int(c)))
    seeds = np.full(background.shape, 255, np.uint8)
    # stable sort: of equal areas the later (higher class index) cue is painted last and wins
    for mask, value in sorted(cues, key=lambda cue: -int(cue[0].sum())):
        seeds[mask] = value
    return seeds
