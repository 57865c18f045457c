"""A held-out check dataset unlike the toy one, for tuning defaults without overfitting it.

Real-photo backgrounds (crops of ``shared/data/coco128_voc``), five other shapes
(hexagon, star, crescent, ellipse, L) with their own noise/stripe/dot textures, 112-144 px
(objects 36-68 px across); ``--scale S`` multiplies the image and object sizes by S.
``--part F`` textures only a fraction F of each object (a band at one end, in a random
direction) with its class's texture and the rest with one texture shared by all classes,
so that, as with VOC's people and animals, only a part (and the outline) tells the class:
the case the erasing methods of ``wsss compare`` were made for.

    python bench/heldout_data.py OUT [--train 250] [--val 60] [--seed 123] [--scale 1]
                                     [--part 1] [--photos ../shared/data/coco128_voc]

then run the pipeline on OUT as on any dataset (see the README).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from wsss_cli.data.io import read_image, write_jpeg, write_palette_png

CLASSES = ("background", "hexagon", "star", "crescent", "ellipse", "lshape")
HUES = {1: 20, 2: 60, 3: 100, 4: 140, 5: 170}


def polygon(cx: float, cy: float, radii: list[float], angle: float) -> np.ndarray:
    k = len(radii)
    return np.int32([(cx + r * np.cos(angle + 2 * np.pi * i / k), cy + r * np.sin(angle + 2 * np.pi * i / k))
                     for i, r in enumerate(radii)])


def shape(cls: int, h: int, w: int, rng: np.random.Generator, scale: float) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    r = int(rng.integers(round(18 * scale), round(34 * scale)))
    cy, cx = int(rng.integers(r, h - r)), int(rng.integers(r, w - r))
    a = rng.uniform(0, 2 * np.pi)
    if cls == 1:
        cv2.fillPoly(mask, [polygon(cx, cy, [r] * 6, a)], 1)
    elif cls == 2:
        cv2.fillPoly(mask, [polygon(cx, cy, [r, 0.45 * r] * 5, a)], 1)
    elif cls == 3:
        cv2.circle(mask, (cx, cy), r, 1, -1)
        cv2.circle(mask, (int(cx + 0.5 * r * np.cos(a)), int(cy + 0.5 * r * np.sin(a))), r, 0, -1)
    elif cls == 4:
        cv2.ellipse(mask, (cx, cy), (r, max(6, r // 2)), np.degrees(a), 0, 360, 1, -1)
    else:
        t = max(6, r // 2)
        cv2.rectangle(mask, (cx - r, cy - r), (cx - r + t, cy + r), 1, -1)
        cv2.rectangle(mask, (cx - r, cy + r - t), (cx + r, cy + r), 1, -1)
    return mask.astype(bool)


def texture(cls: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    hue = (HUES[cls] + rng.uniform(-15, 15)) % 180
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if cls == 1:
        v = cv2.resize(rng.random((h // 6, w // 6)).astype(np.float32), (w, h))
    elif cls == 2:
        v = rng.random((h, w)).astype(np.float32)
    elif cls == 3:
        v = (np.sin(yy * 0.8 + rng.uniform(0, 6)) > 0).astype(np.float32)
    elif cls == 4:
        v = ((np.sin(xx * 1.2) * np.sin(yy * 1.2)) > 0.2).astype(np.float32)
    else:
        v = (np.sin((xx + yy) * 0.9) > 0).astype(np.float32)
    hsv = np.stack([np.full((h, w), hue), np.full((h, w), rng.uniform(90, 200)), 140 + 80 * v], -1)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)


def shared_texture(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """The class-neutral texture of ``--part``: grey checks, the same for every class."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    v = ((np.floor(xx / 3) + np.floor(yy / 3)) % 2).astype(np.float32)
    grey = 110 + 60 * v + rng.uniform(-10, 10)
    return np.repeat(grey[..., None], 3, -1).astype(np.uint8)


def telling_part(obj: np.ndarray, part: float, rng: np.random.Generator) -> np.ndarray:
    """The pixels of ``obj`` in its last ``part`` along a random direction (a band at one end)."""
    ys, xs = np.nonzero(obj)
    a = rng.uniform(0, 2 * np.pi)
    along = np.cos(a) * xs + np.sin(a) * ys
    keep = np.zeros_like(obj)
    keep[ys, xs] = along >= np.quantile(along, 1 - part)
    return keep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--train", type=int, default=250)
    parser.add_argument("--val", type=int, default=60)
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--scale", type=float, default=1.0, help="image and object size factor")
    parser.add_argument("--part", type=float, default=1.0,
                        help="share of each object in its class's texture (the rest shared)")
    parser.add_argument("--photos", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared/data/coco128_voc")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    photos = [read_image(p) for p in sorted((args.photos / "JPEGImages").glob("*.jpg"))[:100]]
    labels: dict[str, list[int]] = {}
    splits: dict[str, list[str]] = {"train": [], "val": []}
    lo, hi = round(112 * args.scale), round(144 * args.scale)
    for split, count in (("train", args.train), ("val", args.val)):
        for i in range(count):
            h, w = int(rng.integers(lo, hi)), int(rng.integers(lo, hi))
            photo = photos[int(rng.integers(len(photos)))]
            y0 = int(rng.integers(0, photo.shape[0] - 100))
            x0 = int(rng.integers(0, photo.shape[1] - 100))
            image = cv2.resize(photo[y0 : y0 + 100, x0 : x0 + 100], (w, h)).copy()
            mask = np.zeros((h, w), np.uint8)
            for cls in rng.choice(np.arange(1, 6), int(rng.integers(1, 4)), replace=False):
                obj = shape(int(cls), h, w, rng, args.scale)
                image[obj] = texture(int(cls), h, w, rng)[obj]
                if args.part < 1:
                    neutral = obj & ~telling_part(obj, args.part, rng)
                    image[neutral] = shared_texture(h, w, rng)[neutral]
                mask[obj] = cls
            image = np.clip(cv2.GaussianBlur(image, (3, 3), 0.6) + rng.normal(0, 5, image.shape), 0, 255)
            image_id = f"{split}_{i:04d}"
            write_jpeg(args.out / "JPEGImages" / f"{image_id}.jpg", image.astype(np.uint8))
            write_palette_png(args.out / "SegmentationClass" / f"{image_id}.png", mask)
            labels[image_id] = [int(c) for c in np.unique(mask) if c > 0]
            splits[split].append(image_id)
    (args.out / "ImageSets/Segmentation").mkdir(parents=True, exist_ok=True)
    for split, ids in splits.items():
        (args.out / "ImageSets/Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    (args.out / "cls_labels.json").write_text(json.dumps(labels))
    (args.out / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    print(f"wrote {args.train} train + {args.val} val images to {args.out}")


if __name__ == "__main__":
    main()
