"""The one training loop every training stage shares.

SGD with momentum 0.9 and *real* weight decay (the reference repos' PolyOptimizer
passed the weight decay in momentum's slot) or AdamW, 10x learning rate for the new layers, a
poly schedule stepped per iteration, AMP (bf16) and channels_last on CUDA, a
resumable ``last.pt`` every epoch, ``metrics.jsonl``, a NaN guard, and
DistributedDataParallel when launched by ``torchrun``.

Randomness is reseeded from (seed, epoch) at each epoch start and every sample's
augmentation draws from its own generator seeded by (seed, epoch, index), so a resumed
run on the CPU ends with exactly the weights of an uninterrupted one, whatever the
number of DataLoader workers.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from wsss_cli.errors import WsssError
from wsss_cli.runtime import Runtime
from wsss_cli.workdir import atomic_path

StepFn = Callable[[nn.Module, list[torch.Tensor]], torch.Tensor]


@dataclass(frozen=True)
class LoopConfig:
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    optimizer: str = "sgd"  # or "adamw" (the tiny presets: converges in a CPU budget)
    workers: int = 0
    amp: bool = True
    resume: bool = False
    momentum: float = 0.9
    poly_power: float = 0.9
    head_lr_mult: float = 10.0


@dataclass(frozen=True)
class Dist:
    """This process's place in a ``torchrun`` job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(runtime: Runtime) -> tuple[Dist, torch.device]:
    """Join the process group when ``torchrun`` set WORLD_SIZE > 1 (NCCL on GPU, else gloo)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = runtime.torch_device()
    if world == 1:
        return Dist(), device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world, local_rank), device


class EpochSampler(Sampler):
    """Yields ``(epoch, index)`` so the dataset can seed each sample's augmentation.

    The permutation depends on (seed, epoch) only; under DDP each rank takes every
    ``world``-th index of it (the tail is dropped so that ranks step in lockstep).
    """

    def __init__(self, size: int, seed: int, dist_info: Dist):
        self.size, self.seed, self.dist = size, seed, dist_info
        self.epoch = 0

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.size, generator=g).tolist()
        usable = len(order) - len(order) % self.dist.world
        return ((self.epoch, i) for i in order[self.dist.rank : usable : self.dist.world])

    def __len__(self) -> int:
        return self.size // self.dist.world


def param_groups(backbone: nn.Module, head: nn.Module, lr: float, head_mult: float) -> list[dict]:
    """Pretrained backbone at ``lr``, the new layers at ``head_mult * lr``."""
    trainable = lambda m: [p for p in m.parameters() if p.requires_grad]  # noqa: E731
    return [
        {"params": trainable(backbone), "lr": lr, "base_lr": lr},
        {"params": trainable(head), "lr": lr * head_mult, "base_lr": lr * head_mult},
    ]


def make_optimizer(groups: list[dict], cfg: LoopConfig) -> torch.optim.Optimizer:
    """SGD with momentum and weight decay (the papers), or AdamW (decoupled decay)."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise WsssError(f"--optimizer {cfg.optimizer!r}: choose sgd or adamw")


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WsssError(f"{path}: checkpoint not found") from None
    except Exception as e:  # torch raises many types for corrupt or foreign files
        raise WsssError(f"{path}: not a readable checkpoint ({type(e).__name__})") from None


def check_meta(path: Path, meta: dict[str, Any], expected: dict[str, Any]) -> None:
    """A checkpoint made for another backbone / class count is a user error."""
    for key, want in expected.items():
        if meta.get(key) != want:
            raise WsssError(f"{path}: checkpoint has {key}={meta.get(key)!r}, expected {want!r}")


def save_model(path: Path, model: nn.Module, meta: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save({"model": _unwrap(model).state_dict(), "meta": meta}, tmp)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def fit(
    model: nn.Module,
    groups: list[dict],
    dataset: Dataset,
    step_fn: StepFn,
    cfg: LoopConfig,
    out_dir: Path,
    runtime: Runtime,
    meta: dict[str, Any],
    logger: logging.Logger,
) -> Path:
    """Train ``model`` and write ``out_dir/model.pt``; returns its path.

    ``dataset[(epoch, index)]`` returns a tuple of arrays; ``step_fn(model, batch)``
    returns the scalar loss of a batch already on the device.
    """
    dist_info, device = init_distributed(runtime)
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(groups, cfg)
    sampler = EpochSampler(len(dataset), runtime.seed, dist_info)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, drop_last=True,
                        num_workers=cfg.workers, pin_memory=device.type == "cuda")
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise WsssError(f"--batch-size {cfg.batch_size} is larger than the {len(dataset)} training images")
    max_steps = steps_per_epoch * cfg.epochs

    last = out_dir / "last.pt"
    start_epoch = 0
    if cfg.resume and last.exists():
        ckpt = load_checkpoint(last)
        check_meta(last, ckpt["meta"], {k: meta[k] for k in ("backbone", "num_classes")})
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start_epoch = ckpt["epoch"]
        logger.info("resumed from %s at epoch %d", last, start_epoch)
    elif cfg.resume:
        logger.info("no %s to resume from; starting at epoch 0", last)
    if dist_info.world > 1:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    amp = cfg.amp and device.type == "cuda"
    metrics_file = out_dir / "metrics.jsonl"
    if start_epoch == 0 and dist_info.is_main:
        metrics_file.unlink(missing_ok=True)
    for epoch in range(start_epoch, cfg.epochs):
        torch.manual_seed(runtime.seed * 100_003 + epoch)
        sampler.epoch = epoch
        model.train()
        started, total, count = time.time(), 0.0, 0
        bar = runtime.progress(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}") \
            if dist_info.is_main else loader
        for i, batch in enumerate(bar):
            step = epoch * steps_per_epoch + i
            scale = (1 - step / max_steps) ** cfg.poly_power
            for g in optimizer.param_groups:
                g["lr"] = g["base_lr"] * scale
            batch = [b.to(device, non_blocking=True) for b in batch]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss = step_fn(model, batch)
            if not math.isfinite(loss.item()):
                raise WsssError(
                    f"loss became {loss.item()} at epoch {epoch + 1} step {step + 1}; stopped. "
                    f"The last good checkpoint is {last if last.exists() else 'none'} "
                    "(try a lower --lr)"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, count = total + loss.item(), count + 1
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{total / count:.4f}")
        if dist_info.is_main:
            record = {"epoch": epoch + 1, "step": (epoch + 1) * steps_per_epoch,
                      "loss": total / max(count, 1), "lr": optimizer.param_groups[0]["lr"],
                      "seconds": round(time.time() - started, 3)}
            with atomic_path(last) as tmp:
                torch.save({"model": _unwrap(model).state_dict(),
                            "optimizer": optimizer.state_dict(),
                            "epoch": epoch + 1, "meta": meta}, tmp)
            with open(metrics_file, "a") as f:
                f.write(json.dumps(record) + "\n")
            logger.info("epoch %d/%d loss %.4f (%.1fs)", epoch + 1, cfg.epochs,
                        record["loss"], record["seconds"])
    final = out_dir / "model.pt"
    if dist_info.is_main:
        save_model(final, model, meta)
    if dist_info.world > 1:
        dist.barrier()
    return final
