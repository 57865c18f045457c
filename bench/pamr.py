"""Time and memory of ``ops.pamr`` against the reference's conv-stack formulation.

    python bench/pamr.py [--json PATH] [--device cpu|cuda] [--threads N]

Cases: image and masks at 128 x 128 (512 x 512 at a quarter of the side) and at
512 x 512; K = 21 masks, 10 iterations, the default dilations, batch 1. Each
(implementation, size) runs in a fresh subprocess: a call on a 16 x 16 input sets up the
libraries, then one warm-up call at the case's size records the peak memory (CPU: peak
RSS above the RSS before it, from ``getrusage``; CUDA: ``torch.cuda.max_memory_allocated``
above the allocation before it), then the best wall time of 3 calls is taken. The outputs
of the two implementations are compared (max |diff|). Prints one table and writes JSON
(default ``bench/results/pamr.json``).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from wsss_cli import ops

SIZES = (128, 512)
CLASSES = 21
ITERS = 10
DILATIONS = (1, 2, 4, 8, 12, 24)
REPEATS = 3
IMPLS = ("reference", "ops.pamr")


def reference_pamr(image: torch.Tensor, masks: torch.Tensor, dilations, iters: int):
    """PAMR as 1-stage-wseg computes it: every neighbour of every pixel stacked by a
    one-hot shift convolution per dilation, i.e. ``[B, K, 8 * len(dilations), H, W]``
    tensors for the masks at every iteration. For comparison only."""
    masks = F.interpolate(masks, size=image.shape[-2:], mode="bilinear", align_corners=True)
    one_hot = torch.eye(9, dtype=image.dtype, device=image.device).view(9, 1, 3, 3)
    ring = one_hot[[0, 1, 2, 3, 5, 6, 7, 8]]
    centre_minus_ring = one_hot[4:5] - ring

    def stack(t: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        b, c, h, w = t.shape
        flat = t.reshape(b * c, 1, h, w)
        parts = [
            F.conv2d(F.pad(flat, [d] * 4, mode="replicate"), kernel, dilation=d) for d in dilations
        ]
        return torch.cat(parts, 1).view(b, c, -1, h, w)

    sigma = stack(image, one_hot).std(2, keepdim=True)
    kappa = (-stack(image, centre_minus_ring).abs() / (1e-8 + 0.1 * sigma)).mean(1, keepdim=True)
    alpha = kappa.softmax(2)
    for _ in range(iters):
        masks = (stack(masks, ring) * alpha).sum(2)
    return masks


def make_inputs(size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A blocky colour image with noise ``[1, 3, S, S]`` and smooth softmax masks."""
    gen = torch.Generator().manual_seed(size)
    blocks = torch.rand(1, 3, 8, 8, generator=gen)
    image = F.interpolate(blocks, size=(size, size), mode="nearest")
    image = (image + 0.05 * torch.randn(image.shape, generator=gen)).clamp_(0, 1)
    logits = 4 * torch.randn(1, CLASSES, 6, 6, generator=gen)
    masks = F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=True)
    return image.to(device), masks.softmax(1).to(device)


def run_case(impl: str, size: int, device_name: str, out_path: str) -> dict:
    """One (implementation, size) case in this process; saves the output to ``out_path``."""
    device = torch.device(device_name)
    fn = ops.pamr if impl == "ops.pamr" else reference_pamr
    image, masks = make_inputs(size, device)
    cuda = device.type == "cuda"

    def call() -> torch.Tensor:
        out = fn(image, masks, DILATIONS, ITERS)
        if cuda:
            torch.cuda.synchronize(device)
        return out

    # the libraries' one-time set-up (thread pools, MKL, CUDA context) is not the op's memory
    fn(*make_inputs(16, device), DILATIONS, ITERS)
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out = call()
    if cuda:
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    np.save(out_path, out.cpu().numpy())
    del out

    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return {
        "impl": impl,
        "size": size,
        "time_s": min(times),
        "times_s": times,
        "peak_mib": peak / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--json", type=Path, default=Path(__file__).parent / "results" / "pamr.json"
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--case", nargs=2, metavar=("IMPL", "SIZE"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.case:
        print(json.dumps(run_case(args.case[0], int(args.case[1]), args.device, args.out)))
        return

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device available")
    results, diffs = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in SIZES:
            outputs = {}
            for impl in IMPLS:
                outputs[impl] = str(Path(tmp) / f"{impl}_{size}.npy")
                cmd = [sys.executable, __file__, "--device", args.device, "--case", impl, str(size)]
                cmd += ["--out", outputs[impl]]
                if args.threads:
                    cmd += ["--threads", str(args.threads)]
                done = subprocess.run(cmd, capture_output=True, text=True, check=True)
                results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            want, got = (np.load(outputs[impl]) for impl in IMPLS)
            diffs[size] = float(np.abs(got.astype(np.float64) - want).max())

    reference = {r["size"]: r for r in results if r["impl"] == "reference"}
    print(
        f"PAMR, K={CLASSES}, {ITERS} iterations, dilations {list(DILATIONS)}, batch 1, "
        f"{args.device}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    header = (
        f"{'size':>9}  {'impl':<10} {'best s':>8} {'speedup':>8} {'peak MiB':>9} {'max|diff|':>10}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        speedup = reference[r["size"]]["time_s"] / r["time_s"]
        print(
            f"{r['size']:>4}x{r['size']:<4}  {r['impl']:<10} {r['time_s']:>8.3f} {speedup:>7.1f}x "
            f"{r['peak_mib']:>9.1f} {diffs[r['size']]:>10.2e}"
        )

    report = {
        "device": args.device,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "classes": CLASSES,
        "iters": ITERS,
        "dilations": list(DILATIONS),
        "batch": 1,
        "repeats": REPEATS,
        "cases": results,
        "max_abs_diff": {str(size): diff for size, diff in diffs.items()},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
