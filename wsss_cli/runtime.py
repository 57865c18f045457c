"""What every stage needs from its surroundings: device, seed, logging, progress bars."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
import random
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from tqdm import tqdm

from wsss_cli.errors import WsssError

T = TypeVar("T")


@dataclass(frozen=True)
class Runtime:
    """The global options: ``--device``, ``--seed``, ``--quiet``."""

    device: str = "auto"
    seed: int = 0
    quiet: bool = False

    def torch_device(self) -> torch.device:
        """``auto`` = CUDA when available; an unavailable CUDA device is a user error."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            device = torch.device(self.device)
        except RuntimeError:
            raise WsssError(f"--device {self.device!r}: expected auto, cpu, cuda or cuda:N") from None
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise WsssError(f"--device {self.device}: CUDA is not available on this machine")
            if device.index is not None and device.index >= torch.cuda.device_count():
                raise WsssError(f"--device {self.device}: only {torch.cuda.device_count()} GPU(s)")
        elif device.type != "cpu":
            raise WsssError(f"--device {self.device!r}: expected auto, cpu, cuda or cuda:N")
        return device

    def seed_everything(self) -> None:
        """Seed torch, numpy and random, e.g. before a model's random initialisation."""
        torch.manual_seed(self.seed)
        np.random.seed(self.seed % 2**32)
        random.seed(self.seed)

    def progress(self, items: Iterable[T], desc: str, total: int | None = None) -> Iterable[T]:
        """A tqdm bar on a terminal; a line every 30 s on stderr when it is a file or a
        pipe (a cluster job's log); nothing with ``--quiet``."""
        if self.quiet:
            return items
        if sys.stderr.isatty():
            return tqdm(items, desc=desc, total=total, dynamic_ncols=True, leave=False)
        if total is None and hasattr(items, "__len__"):
            total = len(items)
        return progress_lines(items, desc, total)


def progress_lines(items: Iterable[T], desc: str, total: int | None,
                   every: float = 30.0) -> Iterator[T]:
    """``items``, writing ``[desc] n/total (rate/s, time left)`` to stderr every ``every`` s."""
    start = last = time.monotonic()
    for done, item in enumerate(items, 1):
        yield item
        now = time.monotonic()
        if now - last >= every:
            last = now
            rate = done / (now - start)
            left = f", {_duration((total - done) / rate)} left" if total else ""
            count = f"{done}/{total}" if total else str(done)
            print(f"[{desc}] {count} ({rate:.2f}/s{left})", file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


def stage_logger(stage: str, log_file: Path, quiet: bool) -> logging.Logger:
    """A logger writing to ``log_file`` (always) and to stderr (unless quiet)."""
    logger = logging.getLogger(f"wsss.{stage}.{log_file}")
    logger.handlers.clear()
    logger.setLevel(logging.INFO)
    logger.propagate = False
    log_file.parent.mkdir(parents=True, exist_ok=True)
    file_handler = logging.FileHandler(log_file)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    logger.addHandler(file_handler)
    if not quiet:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter(f"[{stage}] %(message)s"))
        # the CLI prints a failure itself, once, as its one-line error
        console.addFilter(lambda record: not getattr(record, "file_only", False))
        logger.addHandler(console)
    return logger


# variables that change which kernels or how many threads compute the floats
_NUMERIC_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE",
                "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR", "CUBLAS_WORKSPACE_CONFIG")


def environment() -> dict[str, Any]:
    """What can make the same run give other floats on another machine: the CPU and the
    SIMD kernels torch dispatches to, thread counts, library builds (docs/results.md#demo).
    Recorded in ``state.json`` with every stage run."""
    libraries = {}
    for name in ("torch", "numpy", "opencv-contrib-python-headless", "opencv-python-headless",
                 "pydensecrf2", "scikit-image"):
        try:
            libraries[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    facts = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu": _cpu_info("model name"),
        "cpu_flags": sorted(set(_cpu_info("flags").split()) & _KERNEL_FLAGS),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "libraries": libraries,
        "variables": {k: os.environ[k] for k in _NUMERIC_ENV if k in os.environ},
    }
    if torch.cuda.is_available():
        facts["cuda"] = {"version": torch.version.cuda, "device": torch.cuda.get_device_name()}
    return facts


# the instruction sets whose presence changes the kernels oneDNN picks for convolutions
_KERNEL_FLAGS = {"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16"}


def _cpu_info(key: str) -> str:
    """A field of the first processor in ``/proc/cpuinfo`` ("" where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() if key == "model name" else ""
