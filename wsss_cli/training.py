"""The one training loop every training stage shares.

SGD with momentum 0.9 and *real* weight decay (the reference repos' PolyOptimizer
passed the weight decay in momentum's slot) or AdamW, 10x learning rate for the new layers, a
poly (or step) schedule stepped per iteration, AMP (bf16) on CUDA, channels_last, a
resumable ``last.pt`` every epoch, ``metrics.jsonl``, a NaN guard, and
DistributedDataParallel when launched by ``torchrun``.

Randomness is reseeded from (seed, epoch) at each epoch start and every sample's
augmentation draws from its own generator seeded by (seed, epoch, index), so a resumed
run on the CPU ends with exactly the weights of an uninterrupted one, whatever the
number of DataLoader workers.
"""

from __future__ import annotations

import atexit
import datetime
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader, Dataset, Sampler

from wsss_cli.errors import WsssError
from wsss_cli.models.backbones.base import _FROZEN_ATTR
from wsss_cli.runtime import Runtime
from wsss_cli.workdir import atomic_path

EpochHook = Callable[[int, nn.Module], dict[str, Any]]
T = TypeVar("T")

# the files of a training folder
_LAST, _METRICS, _MODEL = "last.pt", "metrics.jsonl", "model.pt"


@dataclass(frozen=True)
class LoopConfig:
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    optimizer: str = "sgd"  # or "adamw" (the tiny presets: converges in a CPU budget)
    workers: int = 0
    amp: bool = True
    sync_bn: bool = False  # convert BatchNorm to SyncBatchNorm under DDP
    resume: bool = False
    momentum: float = 0.9
    poly_power: float = 0.9
    head_lr_mult: float = 10.0
    lr_phases: int = 0  # 0: poly; N: constant over N equal phases, x0.1 from one to the next


def lr_scale(cfg: LoopConfig, step: int, total_steps: int) -> float:
    """The factor of the base learning rates at ``step`` of ``total_steps``: the poly
    schedule, or with ``lr_phases`` N a step schedule (SEC: x0.1 every quarter)."""
    if cfg.lr_phases:
        return 0.1 ** (cfg.lr_phases * step // total_steps)
    return (1 - step / total_steps) ** cfg.poly_power


@dataclass(frozen=True)
class Dist:
    """This process's place in a ``torchrun`` job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Dist:
        """What ``torchrun`` told this process (WORLD_SIZE, RANK, LOCAL_RANK)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        return cls(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


# Rank 0 alone writes checkpoints, metrics and state while the others wait in the next
# collective; a validation pass or a slow shared filesystem must not trip the watchdog
# (NCCL's default is 10 minutes). A rank that dies is noticed sooner: torchrun stops the
# whole job when one process exits with an error.
_PG_TIMEOUT = datetime.timedelta(minutes=60)


def init_distributed(runtime: Runtime) -> tuple[Dist, torch.device]:
    """Join the process group when ``torchrun`` set WORLD_SIZE > 1 (NCCL on GPU, else gloo).

    Idempotent: ``start_stage`` joins early (rank 0 decides what the stage does), ``fit``
    joins again. The group is destroyed at exit.
    """
    info = Dist.from_env()
    device = runtime.torch_device()
    if info.world == 1:
        return info, device
    if device.type == "cuda":
        if info.local_rank >= torch.cuda.device_count():
            raise WsssError(f"torchrun local rank {info.local_rank} has no GPU "
                            f"(only {torch.cuda.device_count()}); lower --nproc_per_node")
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=_PG_TIMEOUT)
        atexit.register(_destroy_process_group)
    return info, device


def _destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def from_main(obj: T, info: Dist) -> T:
    """Rank 0's ``obj`` on every rank, so that all ranks take the same decision
    (resume or not, already trained or not, a user error) from one view of the files."""
    if info.world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sync_batchnorm(model: nn.Module) -> nn.Module:
    """``model`` with its trainable BatchNorm layers replaced by SyncBatchNorm.

    Frozen layers (``freeze_batchnorm``) stay as they are: they normalise with stored
    statistics and never sync, and replacing them would drop what keeps them frozen.
    The new layers share the old ones' parameters, so optimizer groups built on the
    model stay valid.
    """
    if isinstance(model, _BatchNorm) and not getattr(model, _FROZEN_ATTR, False):
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        new = sync_batchnorm(child)
        if new is not child:
            setattr(model, name, new)
    return model


class EpochSampler(Sampler):
    """Yields ``(epoch, index)`` so the dataset can seed each sample's augmentation.

    The permutation depends on (seed, epoch) only, so every rank draws the same one;
    under DDP rank r takes positions r, r + world, ... of it (DistributedSampler's
    split), after dropping the ``size % world`` last positions so that every rank has
    the same number of samples and the ranks step in lockstep.
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
        # a foreign or corrupt file makes torch warn before it fails: the user gets the
        # one-line error below, not a warning on top of it
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
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


@dataclass(frozen=True)
class StepContext:
    """Where training stands when ``step_fn(model, batch, ctx)`` is called.

    ``epoch`` counts from 0, as the sampler's ``(epoch, index)`` keys (``on_epoch_end``
    and ``metrics.jsonl`` count from 1); ``step`` counts this run's steps from 0 across
    epochs: ``epoch * steps_per_epoch`` + the step's place in its epoch. Under DDP an
    epoch has 1/world of the steps (``steps_per_epoch`` is this process's).
    """

    epoch: int
    step: int
    steps_per_epoch: int
    epochs: int
    device: torch.device = torch.device("cpu")

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch


StepFn = Callable[[nn.Module, list[torch.Tensor], StepContext], torch.Tensor]


@dataclass(frozen=True)
class _Setup:
    """What ``fit`` trains with: the model on its device (DDP-wrapped under torchrun),
    its optimizer, the data and this process's place in the job."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    sampler: EpochSampler
    loader: DataLoader
    steps_per_epoch: int
    dist: Dist
    device: torch.device
    amp: bool  # bf16 autocast (CUDA only)


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
    on_epoch_end: EpochHook | None = None,
) -> Path:
    """Train ``model`` and write ``out_dir/model.pt``; returns its path.

    ``dataset[(epoch, index)]`` returns a tuple of arrays; ``step_fn(model, batch, ctx)``
    returns the scalar loss of a batch already on the device, ``ctx`` a
    :class:`StepContext` (epoch, step, ...). ``on_epoch_end(epoch, model)`` (rank 0
    only, 1-based epoch) may return extra numbers for ``metrics.jsonl``, e.g. a
    validation mIoU.

    Under ``torchrun`` (WORLD_SIZE > 1) the model is wrapped in DistributedDataParallel:
    ``step_fn`` must go through ``model(...)`` (calling submodules directly would skip
    the gradient sync), ``cfg.batch_size`` is per process (the global batch is
    ``world * batch_size``) and each rank sees 1/world of the images per epoch, so an
    epoch has 1/world of the steps. Rank 0 alone writes files; every rank returns after
    ``model.pt`` exists.
    """
    run = _set_up(model, groups, dataset, cfg, runtime, logger)
    start_epoch, history = _resume(run, cfg, out_dir, meta, logger)
    for epoch in range(start_epoch, cfg.epochs):
        record = _train_epoch(run, step_fn, cfg, epoch, runtime, out_dir / _LAST)
        if run.dist.is_main:
            if on_epoch_end is not None:
                record.update(on_epoch_end(epoch + 1, _unwrap(run.model)))
            history.append(record)
            _save_checkpoint(run, out_dir, epoch + 1, history, meta)
            logger.info("epoch %d/%d loss %.4f (%.1fs)", epoch + 1, cfg.epochs,
                        record["loss"], record["seconds"])
    return _save_final(run, out_dir, meta)


def _set_up(model: nn.Module, groups: list[dict], dataset: Dataset, cfg: LoopConfig,
            runtime: Runtime, logger: logging.Logger) -> _Setup:
    """Device (and the process group under torchrun), SyncBatchNorm, optimizer, data
    loader, DDP wrap, AMP."""
    dist_info, device = init_distributed(runtime)
    if cfg.sync_bn:
        if dist_info.world == 1:
            logger.info("--sync-bn: a single process, nothing to synchronise")
        elif device.type != "cuda":
            raise WsssError("--sync-bn needs GPUs: PyTorch's SyncBatchNorm has no CPU version "
                            "(drop --sync-bn for gloo on the CPU)")
        else:
            model = sync_batchnorm(model)
    # channels_last: faster convolutions on the GPU and on the CPU (docs/results.md#demo)
    model.to(device, memory_format=torch.channels_last)
    optimizer = make_optimizer(groups, cfg)
    sampler = EpochSampler(len(dataset), runtime.seed, dist_info)
    # persistent: the workers keep what a dataset caches per image across epochs
    loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, drop_last=True,
                        num_workers=cfg.workers, pin_memory=device.type == "cuda",
                        persistent_workers=cfg.workers > 0)
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        per_rank = f" ({len(sampler)} per process of {dist_info.world})" if dist_info.world > 1 else ""
        raise WsssError(f"--batch-size {cfg.batch_size} is larger than the {len(dataset)} "
                        f"training images{per_rank}")
    if dist_info.world > 1:
        logger.info("DDP: %d processes (%s) x batch %d = %d images per step, %d steps per epoch",
                    dist_info.world, dist.get_backend(), cfg.batch_size,
                    dist_info.world * cfg.batch_size, steps_per_epoch)
        # DDP shares the model's parameters: a checkpoint loaded later into the unwrapped
        # model (``_resume``) is what every rank trains
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    return _Setup(model, optimizer, sampler, loader, steps_per_epoch, dist_info, device,
                  amp=cfg.amp and device.type == "cuda")


def _resume(run: _Setup, cfg: LoopConfig, out_dir: Path, meta: dict[str, Any],
            logger: logging.Logger) -> tuple[int, list[dict[str, Any]]]:
    """The epoch to start at and the records of the epochs before it: from ``last.pt``
    (weights and optimizer state loaded) under ``--resume``, else ``(0, [])``.
    ``metrics.jsonl`` is made to match them."""
    last, metrics_file = out_dir / _LAST, out_dir / _METRICS
    start_epoch, history = 0, []
    # rank 0's view of the folder decides for all: ranks that disagreed would deadlock
    if from_main(cfg.resume and last.exists(), run.dist):
        ckpt = load_checkpoint(last)
        check_meta(last, ckpt["meta"], {k: meta[k] for k in ("backbone", "num_classes")})
        _unwrap(run.model).load_state_dict(ckpt["model"])
        run.optimizer.load_state_dict(ckpt["optimizer"])
        start_epoch = ckpt["epoch"]
        history = list(ckpt["history"]) if "history" in ckpt else _read_metrics(metrics_file, start_epoch)
        logger.info("resumed from %s at epoch %d", last, start_epoch)
    elif cfg.resume:
        logger.info("no %s to resume from; starting at epoch 0", last)
    if run.dist.is_main and history:
        # metrics.jsonl restarts from what the checkpoint knows: a run killed after the
        # checkpoint but before (or while) appending its line leaves no gap or torn line
        with atomic_path(metrics_file) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in history))
    elif run.dist.is_main:
        metrics_file.unlink(missing_ok=True)
    return start_epoch, history


def _train_epoch(run: _Setup, step_fn: StepFn, cfg: LoopConfig, epoch: int, runtime: Runtime,
                 last: Path) -> dict[str, Any]:
    """One pass over this rank's share of the images (``epoch`` from 0); returns the
    epoch's record for ``metrics.jsonl`` (mean loss over the ranks, last learning rate)."""
    # ranks draw different dropout / gate masks; rank 0 of 1 keeps the single-process
    # seeds, on which resuming reproduces an uninterrupted run
    torch.manual_seed(runtime.seed * 100_003 + epoch + 7_919 * run.dist.rank)
    run.sampler.epoch = epoch
    run.model.train()
    started, total, count = time.time(), 0.0, 0
    bar = runtime.progress(run.loader, desc=f"epoch {epoch + 1}/{cfg.epochs}") \
        if run.dist.is_main else run.loader
    for i, batch in enumerate(bar):
        ctx = StepContext(epoch, epoch * run.steps_per_epoch + i, run.steps_per_epoch,
                          cfg.epochs, run.device)
        total, count = total + _train_step(run, step_fn, batch, ctx, cfg, last), count + 1
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{total / count:.4f}")
    return {"epoch": epoch + 1, "step": (epoch + 1) * run.steps_per_epoch,
            "loss": total / max(count, 1), "lr": run.optimizer.param_groups[0]["lr"],
            "seconds": round(time.time() - started, 3)}


def _train_step(run: _Setup, step_fn: StepFn, batch: list[torch.Tensor], ctx: StepContext,
                cfg: LoopConfig, last: Path) -> float:
    """The learning rate (``lr_scale``), the loss (NaN-guarded), one optimizer step; returns
    the batch loss averaged over the ranks."""
    scale = lr_scale(cfg, ctx.step, ctx.total_steps)
    for g in run.optimizer.param_groups:
        g["lr"] = g["base_lr"] * scale
    batch = [b.to(run.device, non_blocking=True) for b in batch]
    with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.amp):
        loss = step_fn(run.model, batch, ctx)
    value = _mean_over_ranks(loss, run.dist)
    if not math.isfinite(value):  # every rank sees the same mean: all stop together
        raise WsssError(
            f"loss became {value} at epoch {ctx.epoch + 1} step {ctx.step + 1}; stopped. "
            f"The last good checkpoint is {last if last.exists() else 'none'} "
            "(try a lower --lr)"
        )
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    return value


def _save_checkpoint(run: _Setup, out_dir: Path, epochs_done: int,
                     history: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    """Rank 0 after an epoch: ``last.pt`` (what ``_resume`` needs), then the epoch's
    line of ``metrics.jsonl``."""
    with atomic_path(out_dir / _LAST) as tmp:
        torch.save({"model": _unwrap(run.model).state_dict(),
                    "optimizer": run.optimizer.state_dict(),
                    "epoch": epochs_done, "meta": meta, "history": history}, tmp)
    with open(out_dir / _METRICS, "a") as f:
        f.write(json.dumps(history[-1]) + "\n")


def _save_final(run: _Setup, out_dir: Path, meta: dict[str, Any]) -> Path:
    """Rank 0 writes ``model.pt`` (weights and ``meta``); every rank returns its path once
    it exists."""
    final = out_dir / _MODEL
    if run.dist.is_main:
        save_model(final, run.model, meta)
    if run.dist.world > 1:
        dist.barrier()  # nobody returns (and reads model.pt) before rank 0 has written it
    return final


def _read_metrics(path: Path, up_to_epoch: int) -> list[dict[str, Any]]:
    """The intact records of epochs <= ``up_to_epoch`` (checkpoints without a history)."""
    records = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # torn by a kill while appending
        if isinstance(record, dict) and record.get("epoch", up_to_epoch + 1) <= up_to_epoch:
            records.append(record)
    return records


def _mean_over_ranks(loss: torch.Tensor, info: Dist) -> float:
    """The batch loss averaged over the ranks (what DDP's averaged gradients descend)."""
    value = loss.detach().float()
    if info.world > 1:
        value = value.clone()
        dist.all_reduce(value)
        value /= info.world
    return value.item()
