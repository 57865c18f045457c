"""toy-data: write the synthetic toy dataset (5 shape classes) in the VOC layout."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from wsss_cli.data.toy import make_toy_dataset
from wsss_cli.options import option
from wsss_cli.runtime import Runtime


@dataclass(frozen=True, kw_only=True)
class ToyDataConfig:
    out: Path = option(help="Output folder.", argument=True, file_okay=False)
    num_train: int = option(300, "Training images.", min=1)
    num_val: int = option(100, "Validation images.", min=1)
    size: int = option(128, "Typical image side in pixels.", min=48)
    runtime: Runtime = field(default=Runtime(), metadata={"cli": False})


def run(cfg: ToyDataConfig) -> str:
    make_toy_dataset(cfg.out, cfg.num_train, cfg.num_val, cfg.size, seed=cfg.runtime.seed,
                     progress=cfg.runtime.progress)
    return f"wrote {cfg.num_train} train + {cfg.num_val} val images to {cfg.out}"
