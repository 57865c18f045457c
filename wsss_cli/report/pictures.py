"""Drawing the report's pictures: thumbnails encoded as data URIs, CAM heatmaps, label
maps in the palette colours (with their legend) and a prediction over its image.

An artifact that is missing or unreadable becomes a placeholder :class:`Picture`, never
an error.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from wsss_cli.data.io import read_mask, voc_palette
from wsss_cli.errors import WsssError

THUMB = 240  # long side of the embedded pictures, in pixels: keeps the page small
IGNORE_COLOUR = (255, 255, 255)  # label 255 (unsure / ignored) is drawn white


@dataclass
class Picture:
    """One cell of a sample row: an encoded picture or a placeholder."""

    caption: str
    uri: str | None = None  # data URI; None = missing
    note: str = "missing"
    size: tuple[int, int] | None = None  # (width, height) of the picture
    labels: bool = False  # a label map: drawn with sharp pixels


@dataclass
class LabelClass:
    """A class and its colour in the label maps."""

    name: str
    rgb: tuple[int, int, int]


def label_classes(names: Sequence[str]) -> list[LabelClass]:
    """Each class with the colour it has in the label maps (its index in the palette)."""
    palette = colour_labels(np.arange(min(len(names), 256), dtype=np.uint8))
    return [LabelClass(n, tuple(int(c) for c in palette[i])) for i, n in enumerate(names[:256])]


def image_picture(image: np.ndarray | None) -> Picture:
    """The image itself, captioned with its size; a placeholder when it could not be read."""
    if image is None:
        return Picture("image")
    return encoded_picture(f"image {image.shape[1]}×{image.shape[0]}", thumbnail(image), "jpeg")


def label_picture(caption: str, path: Path | None, names: Sequence[str],
                  mask: np.ndarray | None = None) -> Picture:
    """A label map (``mask``, else read from ``path``) in the palette colours, captioned
    with the classes it has; a placeholder when it is missing or unreadable."""
    if mask is None:
        mask = read_label_map(path)
    if mask is None:
        return Picture(caption, note=missing_note(path))
    present = [int(c) for c in np.unique(mask) if 0 < c < 255]
    text = f"{caption}: {names_of(present, names)}" if present else caption
    return encoded_picture(text, thumbnail(colour_labels(mask), nearest=True), "png")


def read_label_map(path: Path | None) -> np.ndarray | None:
    """The label map at ``path``; None when missing or unreadable."""
    return try_read(lambda: read_mask(path)) if path is not None and path.exists() else None


def names_of(classes: Sequence[int], names: Sequence[str]) -> str:
    return ", ".join(names[c] if 0 <= c < len(names) else f"class {c}" for c in classes)


def missing_note(path: Path | None) -> str:
    return "unreadable" if path is not None and path.exists() else "missing"


def try_read(load: Any) -> Any:
    """``load()``, or None when the artifact is unreadable (a WsssError from the readers)."""
    try:
        return load()
    except WsssError:
        return None


def encoded_picture(caption: str, rgb: np.ndarray, fmt: str) -> Picture:
    """A thumbnail of RGB uint8 ``rgb`` as a base64 PNG (a label map) or JPEG data URI."""
    return Picture(caption, data_uri(rgb, fmt), size=(rgb.shape[1], rgb.shape[0]), labels=fmt == "png")


def data_uri(rgb: np.ndarray, fmt: str) -> str:
    params = [cv2.IMWRITE_JPEG_QUALITY, 85] if fmt == "jpeg" else [cv2.IMWRITE_PNG_COMPRESSION, 9]
    ok, buf = cv2.imencode(f".{'jpg' if fmt == 'jpeg' else 'png'}", rgb[..., ::-1], params)
    if not ok:
        raise ValueError("cv2.imencode failed")
    return f"data:image/{fmt};base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def thumbnail(array: np.ndarray, nearest: bool = False) -> np.ndarray:
    """Shrink so that the long side is at most THUMB; label maps keep exact values."""
    h, w = array.shape[:2]
    scale = THUMB / max(h, w)
    if scale >= 1:
        return array
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(array, size, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


def colour_labels(mask: np.ndarray) -> np.ndarray:
    palette = voc_palette()
    palette[255] = IGNORE_COLOUR
    return palette[mask]


def cam_heatmap(cams: np.ndarray, image: np.ndarray | None) -> np.ndarray:
    """Max over classes as a JET colour map, half-blended over the image when there is one."""
    peak = cams.max(axis=0) if len(cams) else np.zeros(cams.shape[1:], np.float32)
    peak = np.clip(np.nan_to_num(peak), 0, 1)
    heat = cv2.applyColorMap((peak * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    if image is None:
        return heat
    if heat.shape[:2] != image.shape[:2]:
        heat = cv2.resize(heat, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    return cv2.addWeighted(image, 0.5, heat, 0.5, 0)
