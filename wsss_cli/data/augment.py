"""Image (and label-map) augmentation in numpy/OpenCV.

Every random choice takes an explicit ``np.random.Generator`` so that a sample's
augmentation depends only on (seed, epoch, index): identical whatever the number of
DataLoader workers, and identical after ``--resume``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255


@dataclass(frozen=True)
class AugmentConfig:
    """``resize_long``: range of the long side after random resizing (PSA: 256-512);
    ``scale``: alternative relative range (train-seg: 0.5-1.5); ``crop``: square crop."""

    crop: int
    resize_long: tuple[int, int] | None = None
    scale: tuple[float, float] | None = None
    flip: bool = True
    color_jitter: float = 0.3  # brightness/contrast/saturation strength; hue gets a third of it


def normalize(image: np.ndarray) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]`` -> ImageNet-normalised float32 ``[3, H, W]``."""
    out = (image.astype(np.float32) - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def denormalize(image: np.ndarray) -> np.ndarray:
    """ImageNet-normalised float ``[3, H, W]`` -> RGB uint8 ``[H, W, 3]`` (``normalize``'s inverse,
    rounded and clipped)."""
    out = image.transpose(1, 2, 0) * IMAGENET_STD + IMAGENET_MEAN
    return np.ascontiguousarray(np.clip(np.round(out), 0, 255).astype(np.uint8))


def erase_pixels(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]`` with the pixels of bool ``mask`` ``[H, W]`` set to the
    normalisation mean (0 once normalised): erasing that leaves nothing to learn from."""
    out = image.copy()
    out[mask] = np.round(IMAGENET_MEAN).astype(np.uint8)
    return out


def resize(image: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """Resize ``[H, W, ...]`` to ``size = (H', W')`` (bilinear for images, nearest for labels)."""
    h, w = size
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.resize(image, (w, h), interpolation=interp)


def color_jitter(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Random brightness, contrast, saturation and hue of an RGB uint8 image."""
    img = image.astype(np.float32)
    img *= rng.uniform(1 - strength, 1 + strength)  # brightness
    mean = img.mean()
    img = (img - mean) * rng.uniform(1 - strength, 1 + strength) + mean  # contrast
    gray = img @ np.array([0.299, 0.587, 0.114], np.float32)
    img = (img - gray[..., None]) * rng.uniform(1 - strength, 1 + strength) + gray[..., None]
    img = np.clip(img, 0, 255).astype(np.uint8)
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    shift = int(round(rng.uniform(-strength / 3, strength / 3) * 180))
    hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + shift) % 180).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def random_crop(
    image: np.ndarray, label: np.ndarray | None, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray | None]:
    """Crop ``[3, H, W]`` float (and ``[H, W]`` or ``[H, W, n]`` label) to ``size x size`` at a
    random place.

    A side shorter than ``size`` is placed at a random offset in a zero-padded canvas
    (label padding = 255, ignored), as PSA's and IRN's random crops do.
    """
    _, h, w = image.shape
    ch, cw = min(size, h), min(size, w)
    y0, x0 = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    py, px = rng.integers(0, size - ch + 1), rng.integers(0, size - cw + 1)
    out = np.zeros((image.shape[0], size, size), np.float32)
    out[:, py : py + ch, px : px + cw] = image[:, y0 : y0 + ch, x0 : x0 + cw]
    if label is None:
        return out, None
    out_label = np.full((size, size, *label.shape[2:]), 255, label.dtype)
    out_label[py : py + ch, px : px + cw] = label[y0 : y0 + ch, x0 : x0 + cw]
    return out, out_label


def augment(
    image: np.ndarray,
    label: np.ndarray | None,
    cfg: AugmentConfig,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Training augmentation: resize, flip, colour jitter, normalise, crop.

    ``image`` RGB uint8 ``[H, W, 3]``, ``label`` uint8 or uint16 ``[H, W]`` (or ``[H, W, n]``:
    several label maps) or None, resized with nearest neighbour alongside. Returns float32
    ``[3, crop, crop]`` and the label.
    """
    h, w = image.shape[:2]
    if cfg.resize_long is not None:
        factor = rng.integers(cfg.resize_long[0], cfg.resize_long[1] + 1) / max(h, w)
    elif cfg.scale is not None:
        factor = rng.uniform(*cfg.scale)
    else:
        factor = 1.0
    if factor != 1.0:
        size = (max(1, round(h * factor)), max(1, round(w * factor)))
        image = resize(image, size)
        label = None if label is None else resize(label, size, nearest=True)
    if cfg.flip and rng.random() < 0.5:
        image = image[:, ::-1]
        label = None if label is None else label[:, ::-1]
    if cfg.color_jitter > 0:
        image = color_jitter(np.ascontiguousarray(image), cfg.color_jitter, rng)
    return random_crop(normalize(image), label, cfg.crop, rng)
