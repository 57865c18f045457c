"""The synthetic toy dataset: textured shapes on textured backgrounds, in the VOC layout.

Each class is a shape with its own texture (stripe angle, checker, dots...) and hue
family; colours of different classes overlap and the background is cluttered with
noise, gradients and stray strokes, so a classifier needs shape and texture, its CAMs
light up the most textured part of an object (incomplete, blobby), and the refinement
stages (CRF on colour edges, affinity random walk) have something to fix.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

import cv2
import numpy as np

from wsss_cli.data.io import write_jpeg, write_palette_png
from wsss_cli.workdir import write_bytes

TOY_CLASSES = ("background", "disc", "square", "triangle", "ring", "cross")

# per class: base hue (OpenCV 0..180), texture kind, texture period in px
_STYLES = {
    1: (10, "stripes0", 6),
    2: (110, "checker", 7),
    3: (35, "stripes60", 5),
    4: (150, "dots", 6),
    5: (75, "stripes120", 6),
}


def _shape_mask(cls: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Binary mask ``[h, w]`` of one object of class ``cls`` at a random place and size."""
    mask = np.zeros((h, w), np.uint8)
    r = int(rng.integers(int(min(h, w) * 0.14), int(min(h, w) * 0.27)))
    cy, cx = int(rng.integers(r, h - r)), int(rng.integers(r, w - r))
    angle = rng.uniform(0, np.pi)
    if cls == 1:  # disc (slightly elliptic)
        axes = (r, int(r * rng.uniform(0.7, 1.0)))
        cv2.ellipse(mask, (cx, cy), axes, np.degrees(angle), 0, 360, 1, -1)
    elif cls == 2:  # square, rotated
        pts = [(cx + r * np.cos(angle + k * np.pi / 2), cy + r * np.sin(angle + k * np.pi / 2))
               for k in range(4)]
        cv2.fillPoly(mask, [np.int32(pts)], 1)
    elif cls == 3:  # triangle
        pts = [(cx + r * np.cos(angle + k * 2 * np.pi / 3), cy + r * np.sin(angle + k * 2 * np.pi / 3))
               for k in range(3)]
        cv2.fillPoly(mask, [np.int32(pts)], 1)
    elif cls == 4:  # ring
        cv2.circle(mask, (cx, cy), r, 1, -1)
        cv2.circle(mask, (cx, cy), max(2, int(r * rng.uniform(0.35, 0.55))), 0, -1)
    else:  # cross
        t = max(3, r // 3)
        for a in (angle, angle + np.pi / 2):
            dx, dy = r * np.cos(a), r * np.sin(a)
            cv2.line(mask, (int(cx - dx), int(cy - dy)), (int(cx + dx), int(cy + dy)), 1, t)
    return mask


def _texture(cls: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """RGB uint8 ``[h, w, 3]`` texture of class ``cls`` with per-instance colour jitter."""
    hue, kind, period = _STYLES[cls]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi)
    if kind.startswith("stripes"):
        a = np.radians(float(kind[7:]) + rng.uniform(-12, 12))
        pattern = np.sin((xx * np.cos(a) + yy * np.sin(a)) * 2 * np.pi / period + phase) > 0
    elif kind == "checker":
        pattern = ((xx // period + yy // period) % 2) > 0
    else:  # dots
        pattern = (np.sin(xx * 2 * np.pi / period + phase) * np.sin(yy * 2 * np.pi / period)) > 0.3
    hsv = np.empty((h, w, 3), np.float32)
    hsv[..., 0] = (hue + rng.uniform(-12, 12)) % 180
    hsv[..., 1] = rng.uniform(120, 230)
    # moderate texture contrast: stripes identify the class, yet an object stays one
    # colour region (as in photos), so colour-based refinement (CRF) can follow its outline
    bright = rng.uniform(180, 250)
    hsv[..., 2] = np.where(pattern, bright, bright - rng.uniform(35, 60))
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)


def _background(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Cluttered RGB background: blurred colour noise, a gradient and a few strokes."""
    noise = rng.uniform(0, 255, (h // 8 + 2, w // 8 + 2, 3)).astype(np.float32)
    base = cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC) * 0.5 + 60
    grad = np.linspace(0, rng.uniform(-50, 50), w, dtype=np.float32)[None, :, None]
    img = np.clip(base + grad, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(2, 6))):
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p2 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        color = tuple(int(c) for c in rng.integers(40, 220, 3))
        cv2.line(img, p1, p2, color, int(rng.integers(1, 4)))
    return img


def make_toy_image(rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """One sample: RGB uint8 ``[h, w, 3]`` and its class-index mask ``[h, w]``."""
    h, w = size
    image = _background(h, w, rng)
    mask = np.zeros((h, w), np.uint8)
    classes = rng.choice(np.arange(1, len(TOY_CLASSES)), size=int(rng.integers(1, 4)), replace=False)
    for cls in classes:
        obj = _shape_mask(int(cls), h, w, rng).astype(bool)
        if obj.sum() < 30:
            continue
        tex = _texture(int(cls), h, w, rng)
        shade = np.linspace(rng.uniform(0.75, 1.0), rng.uniform(0.75, 1.0), h, dtype=np.float32)
        image[obj] = (tex[obj] * shade[:, None, None].repeat(w, 1)[obj]).astype(np.uint8)
        mask[obj] = cls
    # soften edges and add sensor noise so colour boundaries are not pixel-perfect
    image = cv2.GaussianBlur(image, (3, 3), 0.7)
    image = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
    return image, mask


def make_toy_dataset(
    out: Path, num_train: int = 300, num_val: int = 100, size: int = 128, seed: int = 0,
    progress: Callable[[Iterable, str, int], Iterable] | None = None,
) -> None:
    """Write the toy dataset to ``out`` in the VOC layout (``train`` and ``val`` splits).

    Image sides vary in ``[0.85 size, 1.15 size]``. Images with no object after
    occlusion get background-only labels, as real datasets have. ``progress`` wraps
    the loop (e.g. ``Runtime.progress``).
    """
    out = Path(out)
    rng = np.random.default_rng(seed)
    labels: dict[str, list[int]] = {}
    splits = {"train": [], "val": []}
    names = [("train", i) for i in range(num_train)] + [("val", i) for i in range(num_val)]
    for split, i in progress(names, "toy-data", len(names)) if progress else names:
        image_id = f"{split}_{i:05d}"
        hw = tuple(int(rng.integers(int(size * 0.85), int(size * 1.15) + 1)) for _ in range(2))
        image, mask = make_toy_image(rng, hw)
        write_jpeg(out / "JPEGImages" / f"{image_id}.jpg", image)
        write_palette_png(out / "SegmentationClass" / f"{image_id}.png", mask)
        labels[image_id] = [int(c) for c in np.unique(mask) if c > 0]
        splits[split].append(image_id)
    for split, ids in splits.items():
        write_bytes(out / "ImageSets" / "Segmentation" / f"{split}.txt", ("\n".join(ids) + "\n").encode())
    write_bytes(out / "cls_labels.json", json.dumps(labels, indent=0).encode())
    write_bytes(out / "classes.txt", ("\n".join(TOY_CLASSES) + "\n").encode())
