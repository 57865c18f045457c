"""The random walk's settings swept on a finished work folder, scored against ground truth.

    python bench/walk_sweep.py DATA WORKDIR [--split train] [--scales 2,4] [--logts 3,4,6]
        [--alphas 1,8] [--thresholds 0.5,0.6,0.7] [--powers 1,4] [--images N] [--json PATH]

Reads the work folder's CAMs (``cams/``) and AffinityNet (``aff/model.pt``), walks every
image once per (walk scale, logt) with every starting background stacked in one walk
(the walk is linear, channel by channel), and scores each combination with and without
the dense CRF. The CAM rows are the baselines: the constant background that scores best
(chosen with the ground truth) and the CRF on it. Prints a table, writes JSON
(docs/results.md#random-walk). Ground truth picks nothing here: every row is reported.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import torch

from wsss_cli import ops
from wsss_cli.data.dataset import VocDataset
from wsss_cli.evaluation import format_table, iou_summary
from wsss_cli.inference import scores_to_label, with_background
from wsss_cli.models.kinds import AFFINITY, load_model
from wsss_cli.walk import WalkSettings, walk_maps, with_threshold
from wsss_cli.workdir import read_cams

CAM_THRESHOLDS = tuple(round(0.01 * i, 2) for i in range(20, 61))


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def constant_background(cams: np.ndarray, t: float) -> np.ndarray:
    """``[1 + n, H, W]``: the threshold ``t`` in front of the CAMs, as eval-cams scores them."""
    return np.concatenate([np.full((1, *cams.shape[1:]), t, np.float32), cams])


def starts(cams: np.ndarray, alphas: list[float]) -> np.ndarray:
    """``[n + len(alphas), H, W]``: the CAMs, then ``(1 - max)^alpha`` for each alpha."""
    return np.concatenate([cams, *[with_background(cams, a)[:1] for a in alphas]])


def candidates(walked: np.ndarray, n: int, args: argparse.Namespace) -> dict[str, np.ndarray]:
    """Scores ``[1 + n, H, W]`` per background of one walk of :func:`starts`."""
    out = {f"psa alpha {a:g}": np.concatenate([walked[n + i: n + i + 1], walked[:n]])
           for i, a in enumerate(args.alphas)}
    for t in args.thresholds:
        out[f"threshold {t:g}"] = with_threshold(walked[:n], t)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--split", default="train")
    parser.add_argument("--scales", type=floats, default=[2.0, 4.0])
    parser.add_argument("--logts", type=floats, default=[3, 4, 6])
    parser.add_argument("--alphas", type=floats, default=[1.0, 8.0])
    parser.add_argument("--thresholds", type=floats, default=[0.5, 0.6, 0.7])
    parser.add_argument("--powers", type=floats, default=[1.0, 4.0])
    parser.add_argument("--images", type=int, help="only the first N images of the split")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)  # the CRF is one core; two sweeps run side by side on two
    data = VocDataset(args.data)
    model, meta = load_model(args.workdir / "aff" / "model.pt", (AFFINITY,))
    model.eval()
    device = torch.device("cpu")
    k = data.num_classes
    ids = data.ids(args.split)[: args.images]
    confusions: dict[tuple, np.ndarray] = {}

    def add(key: tuple, label: np.ndarray, gt: np.ndarray) -> None:
        confusions[key] = confusions.get(key, 0) + ops.confusion_matrix(label, gt, k)

    for image_id in ids:
        image, gt = data.read_image(image_id), data.read_mask(image_id)
        classes, cams = read_cams(args.workdir / "cams" / f"{image_id}.npz")
        for t in CAM_THRESHOLDS:
            add(("CAM", f"threshold {t:.2f}", "-", "-", "none"),
                scores_to_label(image, constant_background(cams, t), classes, None), gt)
        for scale, logt in itertools.product(args.scales, args.logts):
            settings = WalkSettings(background="psa", alpha=0, bg_threshold=0, beta=8.0, radius=5,
                                    logt=int(logt), scale=scale)
            walked = walk_maps(model, image, starts(cams, args.alphas), settings, device)
            for name, scores in candidates(walked, len(classes), args).items():
                add(("walk", name, f"{scale:g}", f"{logt:g}", "none"),
                    scores_to_label(image, scores, classes, None), gt)
                for p in args.powers:
                    add(("walk", name, f"{scale:g}", f"{logt:g}", f"power {p:g}"),
                        scores_to_label(image, scores, classes, True, 10, p), gt)
    mious = {key: iou_summary(c, data.classes)["miou"] for key, c in confusions.items()}
    cam_keys = [key for key in mious if key[0] == "CAM"]
    best = max(cam_keys, key=mious.get)
    threshold = float(best[1].split()[1])
    rows = [(*best, mious[best])]
    for p in args.powers:  # the CRF on the best constant background, as eval-cams --crf
        confusion = 0
        for image_id in ids:
            image, gt = data.read_image(image_id), data.read_mask(image_id)
            classes, cams = read_cams(args.workdir / "cams" / f"{image_id}.npz")
            label = scores_to_label(image, constant_background(cams, threshold), classes, True, 10, p)
            confusion = confusion + ops.confusion_matrix(label, gt, k)
        rows.append(("CAM", best[1], "-", "-", f"power {p:g}", iou_summary(confusion, data.classes)["miou"]))
    rows += [(*key, miou) for key, miou in mious.items() if key[0] == "walk"]
    headers = ["scores", "background", "walk scale", "logt", "CRF", "mIoU"]
    print(format_table(headers, rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"data": str(args.data), "workdir": str(args.workdir),
                                         "split": args.split, "backbone": meta["backbone"],
                                         "rows": [dict(zip(headers, r, strict=True)) for r in rows]},
                                        indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
