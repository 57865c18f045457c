"""Predictions a person can look at: the image tinted with the VOC palette colours of its
predicted classes, class boundaries drawn, and a legend strip below naming the classes.

``OverlayWriter`` is what ``predict`` hands to :func:`wsss_cli.inference.write_labels`:
it runs in the worker processes that write the label PNGs, on the image and label they
already hold, so an overlay costs one blend and one JPEG encoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from wsss_cli.data.io import voc_palette, write_jpeg

OVERLAY_FOLDER = "overlay"  # beside the label PNGs: WORKDIR/<out>/overlay/<id>.jpg
ALPHA = 0.5  # weight of the class colour in a tinted pixel
IGNORE = 255

_PALETTE = voc_palette()
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_STRIP = (40, 40, 40)  # legend background
_TEXT = (240, 240, 240)


def overlay_path(png: Path) -> Path:
    """The overlay of the label PNG ``<folder>/<id>.png``: ``<folder>/overlay/<id>.jpg``."""
    png = Path(png)
    return png.parent / OVERLAY_FOLDER / f"{png.name.removesuffix('.png')}.jpg"


def class_name(names: Sequence[str], index: int) -> str:
    """The name of class ``index``; ``class<i>`` for one past the end of ``names``."""
    return names[index] if 0 <= index < len(names) else f"class{index}"


def tint(image: np.ndarray, label: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]``: ``image`` blended with the palette colour of ``label``
    (``[H, W]``) on every object pixel, and the boundaries between classes drawn.

    Background (0) and ignore (255) pixels keep the image's colours, else the whole
    picture would be darkened by background's black. Boundary pixels (those with a
    neighbour of another class, a line about 1/400 of the short side on each side, at
    least 1 px) take their own class's colour at full strength: the object's rim in its
    colour, the background's in black.
    """
    colours = _PALETTE[label]
    blended = cv2.addWeighted(image, 1 - alpha, colours, alpha, 0)
    objects = (label != 0) & (label != IGNORE)
    out = np.where(objects[..., None], blended, image)
    radius = max(1, round(min(label.shape) / 400))
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    edges = cv2.morphologyEx(label, cv2.MORPH_GRADIENT, kernel) > 0
    out[edges] = colours[edges]
    return out


def legend_strip(width: int, entries: Sequence[tuple[str, tuple[int, int, int]]]) -> np.ndarray:
    """RGB uint8 ``[h, width, 3]``: a colour swatch and the name of each ``(name, rgb)``
    entry, left to right, wrapped onto more rows when the width runs out ("background
    only" when there is none). The font scales with ``width``; names are drawn in ASCII
    (OpenCV's Hershey fonts), others as ``?``."""
    scale = max(0.3, width / 900)
    thick = max(1, round(scale))
    (_, text_h), base = cv2.getTextSize("Ag", _FONT, scale, thick)
    pad = max(2, text_h // 3)
    row_h = text_h + base + pad
    items = [(name.encode("ascii", "replace").decode(), rgb) for name, rgb in entries]
    if not items:
        items = [("background only", None)]
    placed, row, x = [], 0, pad
    for name, rgb in items:
        text_w = cv2.getTextSize(name, _FONT, scale, thick)[0][0]
        item_w = (text_h + pad if rgb is not None else 0) + text_w
        if x > pad and x + item_w > width - pad:
            row, x = row + 1, pad
        placed.append((name, rgb, x, pad + row * row_h))
        x += item_w + 3 * pad
    strip = np.empty((pad + (row + 1) * row_h, width, 3), np.uint8)
    strip[:] = _STRIP
    for name, rgb, x, top in placed:
        if rgb is not None:
            cv2.rectangle(strip, (x, top), (x + text_h, top + text_h), tuple(int(c) for c in rgb), -1)
            cv2.rectangle(strip, (x, top), (x + text_h, top + text_h), _TEXT, thick)
            x += text_h + pad
        cv2.putText(strip, name, (x, top + text_h), _FONT, scale, _TEXT, thick, cv2.LINE_AA)
    return strip


def overlay(image: np.ndarray, label: np.ndarray, names: Sequence[str],
            alpha: float = ALPHA) -> np.ndarray:
    """RGB uint8 ``[H + h, W, 3]``: :func:`tint` of the image above the legend strip of the
    object classes present in ``label`` (``h`` = :func:`legend_strip`'s height)."""
    present = [int(c) for c in np.unique(label) if c not in (0, IGNORE)]
    entries = [(class_name(names, c), tuple(int(v) for v in _PALETTE[c])) for c in present]
    return np.concatenate([tint(image, label, alpha), legend_strip(image.shape[1], entries)])


@dataclass(frozen=True)
class OverlayWriter:
    """Writes :func:`overlay` of an image and its label beside the label's PNG
    (:func:`overlay_path`), atomically; small and picklable for the worker processes."""

    names: tuple[str, ...]
    quality: int = 90

    def __call__(self, png: Path, image: np.ndarray, label: np.ndarray) -> None:
        write_jpeg(overlay_path(png), overlay(image, label, self.names), self.quality)
