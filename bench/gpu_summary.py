"""The table of ``bench/gpu_check.sh``: each step's status and time, the CRF and CAM-method
benches' rows, the demo's mIoU table; also ``OUT/gpu_check.json``.

    python bench/gpu_summary.py OUT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def summary(out: Path) -> dict:
    steps = {}
    for line in (out / "steps.txt").read_text().splitlines():
        name, rc, seconds = line.split()
        steps[name] = {"exit": int(rc), "seconds": round(float(seconds), 1)}
    return {"gpu": (out / "gpu.txt").read_text().strip(), "steps": steps,
            "crf": read_json(out / "crf.json"), "random_walk": read_json(out / "random_walk.json"),
            "random_walk_cpu": read_json(out / "random_walk_cpu.json"),
            "cam_methods": read_json(out / "cam_methods.json"), "demo": read_json(out / "demo.json")}


def main() -> None:
    out = Path(sys.argv[1])
    result = summary(out)
    (out / "gpu_check.json").write_text(json.dumps(result, indent=1))
    print(f"GPU: {result['gpu']}")
    print("| step | exit | seconds |\n|---|---|---|")
    for name, step in result["steps"].items():
        print(f"| {name} | {step['exit']} | {step['seconds']} |")
    if result["crf"]:
        print("\n| size | backend | s / image | argmax agreement |\n|---|---|---|---|")
        for case in result["crf"]["cases"]:
            print(f"| {case['size'][0]}x{case['size'][1]} | {case['backend']} | {case['time_s']:.4f} "
                  f"| {case['argmax_agreement']:.4f} |")
    if result["cam_methods"]:
        print("\n| backbone | CAM method | batch x crop | s / step | peak MB |\n|---|---|---|---|---|")
        for row in result["cam_methods"]["rows"]:
            peak = "-" if row["peak_mb"] is None else f"{row['peak_mb']:.0f}"
            print(f"| {row['backbone']} | {row['method']} | {row['batch']} x {row['crop']} "
                  f"| {row['seconds_per_step']:.3f} | {peak} |")
    if result["demo"]:
        print("\n| demo stage | split | mIoU |\n|---|---|---|")
        for row in result["demo"]["table"]:
            print(f"| {row['stage']} | {row['split']} | {row['miou']} |")


if __name__ == "__main__":
    main()
