"""Time of ``ops.dense_crf``'s backends per image, and the torch backend's agreement with pydensecrf.

    python bench/crf.py [--out PATH] [--images N] [--repeats N] [--data DIR]

Cases: the first N photos of coco128_voc's ``train.txt`` (default 4) resized to 320 x 480 and
to 375 x 500 (H x W), K = 21 labels, 10 mean-field iterations, the default kernel parameters.
The probabilities are a softmax of the ground-truth mask's one-hot, blurred (8x average pool,
bilinear upsampling) and noised. Backends: pydensecrf (single-threaded C++; the reference, or
left out if not installed), torch on the CPU with 1 and with 2 threads (``torch.set_num_threads``),
torch on CUDA when available. Every backend first runs once on a small image (library set-up,
CUDA context), then each image's best wall time of ``--repeats`` calls is taken; the table
gives the mean over the images. The agreement is the share of pixels whose argmax equals the
reference's, over all the images; max |diff| the largest posterior difference. Prints one table
and writes JSON (default ``bench/results/crf.json``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from wsss_cli.data.io import read_image, read_mask
from wsss_cli.ops.crf import dense_crf, dense_crf_torch

SIZES = ((320, 480), (375, 500))
CLASSES = 21
ITERS = 10
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco128_voc"
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "crf.json"
# image [H, W, 3] uint8, probs [K, H, W] -> posterior [K, H, W]
Crf = Callable[[np.ndarray, np.ndarray], np.ndarray]


def load_case(data: Path, image_id: str, size: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A photo resized to ``size`` ``[H, W, 3]`` uint8 and noisy probabilities ``[K, H, W]`` float32."""
    image = torch.from_numpy(read_image(data / "JPEGImages" / f"{image_id}.jpg"))
    mask = torch.from_numpy(read_mask(data / "SegmentationClass" / f"{image_id}.png"))
    image = F.interpolate(image.permute(2, 0, 1)[None].float(), size=size, mode="bilinear", antialias=True)
    image = image[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
    mask = F.interpolate(mask[None, None].float(), size=size, mode="nearest")[0, 0].long()
    mask[mask == 255] = 0
    gen = torch.Generator().manual_seed(seed)
    one_hot = F.one_hot(mask, CLASSES).permute(2, 0, 1)[None].float()
    coarse = F.avg_pool2d(one_hot, 8, ceil_mode=True)
    logits = 4 * coarse + torch.randn(coarse.shape, generator=gen)
    logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    probs = (logits + 0.5 * torch.randn(logits.shape, generator=gen))[0].softmax(0)
    return image, probs.numpy()


def backends() -> dict[str, tuple[Crf, int | None]]:
    """name -> (crf of one image, torch CPU threads to set or None); the first is the reference."""

    def on_cuda(image: np.ndarray, probs: np.ndarray) -> np.ndarray:
        q = dense_crf_torch(torch.from_numpy(image).cuda(), torch.from_numpy(probs)[None].cuda(), iters=ITERS)
        return q[0].cpu().numpy()

    def backend(name: str) -> Crf:
        return lambda image, probs: dense_crf(image, probs, iters=ITERS, backend=name)

    out = {"pydensecrf": (backend("pydensecrf"), None)} if importlib.util.find_spec("pydensecrf") else {}
    out["torch cpu 1 thread"] = (backend("torch"), 1)
    out["torch cpu 2 threads"] = (backend("torch"), 2)
    if torch.cuda.is_available():
        out["torch cuda"] = (on_cuda, None)
    return out


def small_case() -> tuple[np.ndarray, np.ndarray]:
    """A 24 x 32 random image and probabilities, for the warm-up call."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    probs = rng.dirichlet(np.ones(CLASSES), size=(24, 32)).transpose(2, 0, 1).astype(np.float32)
    return image, probs


def time_backend(
    fn: Crf, cases: list[tuple[np.ndarray, np.ndarray]], repeats: int
) -> tuple[list[float], list[np.ndarray]]:
    """Best-of-``repeats`` seconds per case, and the posteriors."""
    fn(*small_case())
    times, outputs = [], []
    for image, probs in cases:
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            out = fn(image, probs)
            best = min(best, time.perf_counter() - start)
        times.append(best)
        outputs.append(out)
    return times, outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="coco128_voc folder")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    ids = (args.data / "ImageSets" / "Segmentation" / "train.txt").read_text().split()[: args.images]
    default_threads = torch.get_num_threads()
    results = []
    for size in SIZES:
        cases = [load_case(args.data, image_id, size, seed) for seed, image_id in enumerate(ids)]
        reference = None
        for name, (fn, threads) in backends().items():
            torch.set_num_threads(threads or default_threads)
            times, outputs = time_backend(fn, cases, args.repeats)
            if reference is None:
                reference = outputs
            pairs = list(zip(outputs, reference, strict=True))
            agree = np.mean([(o.argmax(0) == r.argmax(0)).mean() for o, r in pairs])
            diff = max(float(np.abs(o - r).max()) for o, r in pairs)
            results.append(
                {
                    "size": list(size),
                    "backend": name,
                    "threads": threads,
                    "time_s": float(np.mean(times)),
                    "times_s": times,
                    "argmax_agreement": float(agree),
                    "max_abs_diff": diff,
                }
            )
    torch.set_num_threads(default_threads)
    print_table(results)
    report = {
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "classes": CLASSES,
        "iters": ITERS,
        "images": ids,
        "repeats": args.repeats,
        "cases": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


def print_table(results: list[dict]) -> None:
    print(f"dense CRF, K={CLASSES}, {ITERS} iterations, default parameters, torch {torch.__version__}\n")
    reference = results[0]["backend"]
    print(f"| size (HxW) | backend | s / image | time / {reference} | argmax agreement | max abs diff |")
    print("|---|---|---:|---:|---:|---:|")
    base = {tuple(r["size"]): r["time_s"] for r in results if r["backend"] == reference}
    for r in results:
        h, w = r["size"]
        ratio = r["time_s"] / base[(h, w)]
        print(
            f"| {h}x{w} | {r['backend']} | {r['time_s']:.3f} | {ratio:.2f}x | "
            f"{100 * r['argmax_agreement']:.3f}% | {r['max_abs_diff']:.1e} |"
        )


if __name__ == "__main__":
    main()
