"""Benchmark ``wsss_cli.ops.random_walk`` (its torch and native backends) against a dense
N x N random walk.

The dense reference is the way PSA's ``infer_aff`` works: the full ``N x N`` affinity matrix
(same edges as the op: all pairs with ``dy^2 + dx^2 < r^2`` plus self-loops), ``A ** beta``,
column normalisation, ``logt`` squarings, then ``scores @ T``.

Every (grid, method) case runs in a fresh subprocess so that its peak memory is its own:
on CPU the peak resident set size above the level after imports and input creation, on CUDA
``torch.cuda.max_memory_allocated`` above the memory allocated before the call.

Each case also reports the walk's rate in multiply-adds per second, counting
``2**logt * N * neighbours * K`` (neighbours: the disk's offsets, self included: 69 for
r = 5), beside the rate of a 1024 x 1024 float32 matmul timed in the same process (same
device and threads), and the ratio of the two: how far the walk is from the machine's
matmul speed.

The native backend (a C kernel built on first use) runs where it applies (the CPU) and
a C compiler is at hand; otherwise its rows are left out.

    python bench/random_walk.py [--json PATH] [--device cpu|cuda] [--repeats N]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from wsss_cli.ops import affinity_offsets, native, random_walk

K_CLASSES = 21
C_FEATURES = 448
BETA = 8
LOGT = 8
RADIUS = 5
# the matmul whose rate the walk is compared with: MATMUL_SIZE^2 x MATMUL_SIZE multiply-adds
MATMUL_SIZE = 1024
# (h, w, run the dense reference too)
GRIDS = [(32, 32, True), (64, 64, True), (125, 94, False)]
# OpenMP settings change CPU timings a lot on a loaded machine; recorded with the results
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "random_walk.json"


def dense_random_walk(
    scores: torch.Tensor, features: torch.Tensor, radius: int, beta: float, logt: int
) -> torch.Tensor:
    """Reference walk with dense matrices. ``scores`` [K, h, w], ``features`` [C, h, w]."""
    k, h, w = scores.shape
    c = features.shape[0]
    n = h * w
    device = features.device
    flat = features.reshape(c, n)
    grid = torch.arange(n, device=device).reshape(h, w)
    aff = torch.eye(n, dtype=features.dtype, device=device)
    for dy, dx in affinity_offsets(radius):
        src = grid[: h - dy, max(0, -dx) : w - max(0, dx)].reshape(-1)
        dst = grid[dy:, max(0, dx) : w - max(0, -dx)].reshape(-1)
        a = torch.exp(-(flat[:, src] - flat[:, dst]).abs().mean(0))
        aff[src, dst] = a
        aff[dst, src] = a
    trans = aff.pow(beta)
    trans = trans / trans.sum(0, keepdim=True)
    for _ in range(logt):
        trans = trans @ trans
    return (scores.reshape(k, n) @ trans).reshape(k, h, w)


def make_inputs(h: int, w: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """CAM-like scores [K, h, w] and ELU-like features [C, h, w] with a few regions."""
    gen = torch.Generator().manual_seed(h * 1000 + w)
    regions = torch.randint(0, 4, (h // 8 + 1, w // 8 + 1), generator=gen)
    regions = regions.repeat_interleave(8, 0).repeat_interleave(8, 1)[:h, :w]
    centres = torch.randn(4, C_FEATURES, generator=gen)
    features = centres[regions].permute(2, 0, 1) + 0.3 * torch.randn(
        C_FEATURES, h, w, generator=gen
    )
    features = torch.nn.functional.elu(features)
    scores = torch.rand(K_CLASSES, h, w, generator=gen) ** 4
    return scores.to(device).contiguous(), features.to(device).contiguous()


def _current_rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak_rss() -> bool:
    """Lower the kernel's peak-RSS mark to the current RSS (Linux >= 4.0); False if not.

    Free heap memory is first handed back to the OS (glibc ``malloc_trim``): otherwise the
    temporaries of input creation stay resident and the op reuses them unseen.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def walk_macs(n: int) -> int:
    """Multiply-adds of the walk on ``n`` pixels as counted here: steps x pixels x disk x K."""
    return 2**LOGT * n * (2 * len(affinity_offsets(RADIUS)) + 1) * K_CLASSES


def matmul_rate(device: str, repeats: int) -> float:
    """Multiply-adds per second of a MATMUL_SIZE^2 float32 matmul, best of ``repeats`` runs."""
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(MATMUL_SIZE, MATMUL_SIZE, generator=gen).to(device) for _ in range(2))
    cuda = device.startswith("cuda")
    times = []
    for _ in range(repeats + 1):  # the first run is a warm-up
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch.mm(a, b)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return MATMUL_SIZE**3 / min(times[1:])


def worker(h: int, w: int, method: str, device: str, repeats: int, out_path: str) -> dict:
    """Time and measure one case in this (fresh) process; saves the output to ``out_path``.

    The matmul is timed after the case, so that its memory is not in the case's peak.
    """
    scores, features = make_inputs(h, w, device)
    if method != "dense":

        def call() -> torch.Tensor:
            return random_walk(scores, features, RADIUS, BETA, LOGT, backend=method)
    else:

        def call() -> torch.Tensor:
            return dense_random_walk(scores, features, RADIUS, BETA, LOGT)

    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        if _reset_peak_rss():
            base = _current_rss_bytes()
        else:
            base = _peak_rss_bytes()
    out = call()
    times = []
    for _ in range(repeats):
        del out
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = call()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() if cuda else _peak_rss_bytes()) - base
    np.save(out_path, out.cpu().numpy())
    # more runs than the walk's: one matmul is short and a loaded machine's noise large
    mm_rate = matmul_rate(device, max(repeats, 10))
    return {"seconds": min(times), "peak_mb": max(peak, 0) / 2**20, "matmul_mac_per_s": mm_rate}


def run_case(h: int, w: int, method: str, args: argparse.Namespace, tmp: str) -> dict:
    """Run one case in a fresh interpreter; its timing, peak memory and output."""
    out_path = os.path.join(tmp, f"{h}x{w}_{method}.npy")
    cmd = [sys.executable, __file__, "--device", args.device, "--repeats", str(args.repeats)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    cmd += ["--worker", f"{h},{w},{method},{out_path}"]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["out"] = np.load(out_path)
    return result


def _rates(seconds: float, n: int, matmul_mac_per_s: float) -> dict:
    """The walk's multiply-adds per second, the matmul's, and how many times faster the matmul is."""
    walk = walk_macs(n) / seconds
    return {
        "walk_mac_per_s": walk,
        "matmul_mac_per_s": matmul_mac_per_s,
        "matmul_over_walk": matmul_mac_per_s / walk,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write results")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after a warm-up")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        h, w, method, out_path = args.worker.split(",", 3)
        print(json.dumps(worker(int(h), int(w), method, args.device, args.repeats, out_path)))
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available")

    methods = ["torch"]
    if args.device == "cpu" and native.library("random_walk") is not None:
        methods.append("native")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for h, w, with_dense in GRIDS:
            case = {"grid": f"{h}x{w}", "N": h * w}
            dense = run_case(h, w, "dense", args, tmp) if with_dense else None
            if dense is not None:
                rows.append(
                    case
                    | {"method": "dense", "seconds": dense["seconds"], "peak_mb": dense["peak_mb"]}
                    | {"max_abs_diff": None, "speedup": 1.0}
                    | _rates(dense["seconds"], h * w, dense["matmul_mac_per_s"])
                )
            for method in methods:
                result = run_case(h, w, method, args, tmp)
                diff = speedup = None
                if dense is not None:
                    diff = float(np.abs(result["out"] - dense["out"]).max())
                    speedup = dense["seconds"] / result["seconds"]
                rows.append(
                    case
                    | {"method": method, "seconds": result["seconds"], "peak_mb": result["peak_mb"]}
                    | {"max_abs_diff": diff, "speedup": speedup}
                    | _rates(result["seconds"], h * w, result["matmul_mac_per_s"])
                )

    header = f"{'grid':>8} {'N':>6} {'method':>7} {'seconds':>9} {'peak MB':>8} "
    header += f"{'max |diff|':>11} {'speedup':>8} {'GMAC/s':>7} {'mm GMAC/s':>9} {'mm/walk':>7}"
    print(header)
    for r in rows:
        diff = "-" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.2e}"
        speed = "-" if r["speedup"] is None else f"{r['speedup']:.1f}x"
        print(
            f"{r['grid']:>8} {r['N']:>6} {r['method']:>7} {r['seconds']:>9.3f} "
            f"{r['peak_mb']:>8.1f} {diff:>11} {speed:>8} {r['walk_mac_per_s'] / 1e9:>7.2f} "
            f"{r['matmul_mac_per_s'] / 1e9:>9.2f} {r['matmul_over_walk']:>6.1f}x"
        )

    meta = {
        "device": args.device,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "repeats": args.repeats,
        "env": {k: os.environ[k] for k in THREAD_ENV if k in os.environ},
        "load_average": os.getloadavg(),
        "params": {"K": K_CLASSES, "C": C_FEATURES, "beta": BETA, "logt": LOGT, "radius": RADIUS},
        "matmul_size": MATMUL_SIZE,
    }
    if args.device == "cuda":
        meta["gpu"] = torch.cuda.get_device_name()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
