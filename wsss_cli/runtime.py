"""What every stage needs from its surroundings: device, seed, logging, progress bars."""

from __future__ import annotations

import logging
import random
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

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
        """A tqdm bar on stderr, off with ``--quiet`` or when stderr is not a terminal."""
        disable = self.quiet or not sys.stderr.isatty()
        return tqdm(items, desc=desc, total=total, disable=disable, dynamic_ncols=True, leave=False)


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
        logger.addHandler(console)
    return logger
