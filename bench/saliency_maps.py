"""Class-agnostic saliency maps made from a dataset's masks: blurred, noisy, imperfect, the
kind a good saliency detector gives, for checking the ``--saliency DIR`` paths
(make-seeds, make-aff-labels) without a saliency network.

    python bench/saliency_maps.py DATA OUT [--split train] [--blur 0.06] [--noise 0.25]
                                  [--drop 0.15] [--seed 0]

Per image: the objects' mask (every class one), blurred by a Gaussian of ``blur`` x the
image's longer side, minus a random share ``drop`` of each object (a missed part),
plus smooth noise of amplitude ``noise``; 0-255 grayscale ``OUT/<id>.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from wsss_cli.data.dataset import VocDataset
from wsss_cli.data.io import write_palette_png


def saliency_map(mask: np.ndarray, rng: np.random.Generator, blur: float, noise: float,
                 drop: float) -> np.ndarray:
    """uint8 ``[H, W]`` saliency from a class mask ``[H, W]`` (255 = ignored, counted as object)."""
    h, w = mask.shape
    objects = (mask > 0).astype(np.float32)
    if drop > 0:  # a missed part: a random half-plane cut through a share of each image's objects
        ys, xs = np.mgrid[:h, :w]
        angle = rng.uniform(0, 2 * np.pi)
        side = np.cos(angle) * xs + np.sin(angle) * ys
        if objects.any():
            cut = np.quantile(side[objects > 0], 1 - drop)
            objects[(side > cut) & (objects > 0)] = 0
    sigma = max(blur * max(h, w), 0.5)
    smooth = cv2.GaussianBlur(objects, (0, 0), sigma)
    field = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 4 * sigma)
    field = (field - field.min()) / (np.ptp(field) + 1e-6)
    return np.clip(255 * (smooth + noise * field), 0, 255).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--split", default="train")
    parser.add_argument("--blur", type=float, default=0.06)
    parser.add_argument("--noise", type=float, default=0.25)
    parser.add_argument("--drop", type=float, default=0.15)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data = VocDataset(args.data)
    rng = np.random.default_rng(args.seed)
    ids = data.ids(args.split)
    for image_id in ids:
        write_palette_png(args.out / f"{image_id}.png",
                          saliency_map(data.read_mask(image_id), rng, args.blur, args.noise, args.drop))
    print(f"wrote {len(ids)} saliency maps to {args.out}")


if __name__ == "__main__":
    main()
