"""The cost of a CAM method's training step against the plain CAM's: time and peak memory.

    python bench/cam_methods.py [--backbones tiny,resnet38] [--methods cam,seam]
        [--batch 8] [--crop 448] [--steps 3] [--device cpu|cuda] [--json PATH]

One training step = forward, the method's loss, backward and an SGD step, on random
images with random labels (the cost does not depend on the values), after one warm-up
step. SEAM's step passes the batch and its rescaled copy and runs the PCM on both. Prints
a table, writes JSON (docs/results.md#seam).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from wsss_cli.cam_methods import CAM_METHODS
from wsss_cli.models.backbones import build_backbone
from wsss_cli.training import StepContext

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "cam_methods.json"
NUM_CLASSES = 20


def names(text: str) -> list[str]:
    return text.split(",")


def step_cost(backbone: str, method_name: str, args: argparse.Namespace) -> dict:
    """Median seconds per step and peak memory (CUDA only) of one method on one backbone."""
    torch.manual_seed(0)
    device = torch.device(args.device)
    # configured as train-cls configures it for this backbone (ACoL's head width, say)
    method = CAM_METHODS.get(method_name).configured(argparse.Namespace(backbone=backbone))
    net = method.build(build_backbone(backbone), NUM_CLASSES, 0.0).to(device).train()
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    images = torch.randn(args.batch, 3, args.crop, args.crop, device=device)
    labels = (torch.rand(args.batch, NUM_CLASSES, device=device) < 0.15).float()
    labels[:, 0] = 1
    ctx = StepContext(epoch=0, step=0, steps_per_epoch=1, epochs=1, device=device)
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for step in range(args.steps + 1):
        start = time.perf_counter()
        optimizer.zero_grad()
        method.loss(net, [images, labels], ctx).backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step:  # the first step warms up
            times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"backbone": backbone, "method": method_name, "batch": args.batch, "crop": args.crop,
            "seconds_per_step": sorted(times)[len(times) // 2], "peak_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbones", type=names, default=["tiny"])
    parser.add_argument("--methods", type=names, default=["cam", "seam"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args()
    rows = [step_cost(b, m, args) for b in args.backbones for m in args.methods]
    base = {r["backbone"]: r["seconds_per_step"] for r in rows if r["method"] == args.methods[0]}
    print(f"{'backbone':<10} {'method':<8} {'s/step':>8} {'x ' + args.methods[0]:>8} {'peak MB':>8}")
    for r in rows:
        ratio = r["seconds_per_step"] / base[r["backbone"]]
        peak = f"{r['peak_mb']:.0f}" if r["peak_mb"] is not None else "-"
        print(f"{r['backbone']:<10} {r['method']:<8} {r['seconds_per_step']:>8.3f} {ratio:>8.2f} {peak:>8}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"device": args.device, "threads": torch.get_num_threads(),
                                     "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
