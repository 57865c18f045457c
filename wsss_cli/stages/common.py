"""Plumbing every stage shares: settings hashing, stage start, per-image bookkeeping."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

import wsss_cli
from wsss_cli.errors import WsssError
from wsss_cli.runtime import Runtime, stage_logger
from wsss_cli.training import Dist, LoopConfig, from_main, init_distributed
from wsss_cli.workdir import Shard, Workdir


def unhashed(default: Any = None) -> Any:
    """A config field that does not change a stage's outputs (workers, resume, ...)."""
    return field(default=default, metadata={"hash": False})


def settings_of(cfg: Any) -> dict[str, Any]:
    """The JSON-able settings of a config dataclass that determine its outputs."""
    out: dict[str, Any] = {}
    for f in fields(cfg):
        if not f.metadata.get("hash", True):
            continue
        value = getattr(cfg, f.name)
        if isinstance(value, Runtime):
            out["seed"] = value.seed
        elif isinstance(value, Path):  # "data" and "/abs/data" are the same dataset
            out[f.name] = str(value.resolve())
        else:
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def options_of(cfg: Any) -> dict[str, Any]:
    """Every option of a config (for ``config.toml``), paths as strings."""
    out = {}
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, Runtime):
            out.update(device=value.device, seed=value.seed)
        elif isinstance(value, Path):
            out[f.name] = str(value)
        elif value is not None:
            out[f.name] = value
    return out


@dataclass(frozen=True)
class TrainingConfig:
    """The options every training stage shares; None = the backbone's preset."""

    data: Path
    workdir: Path = unhashed()
    split: str = "train"
    backbone: str | None = None
    pretrained: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    optimizer: str | None = None
    lr: float | None = None
    weight_decay: float | None = None
    crop_size: int | None = None
    resize_long: tuple[int, int] | None = None
    freeze_bn: bool | None = None
    amp: bool = True
    sync_bn: bool = False
    workers: int = unhashed(2)
    resume: bool = unhashed(False)
    overwrite: bool = unhashed(False)
    runtime: Runtime = Runtime()

    def loop(self) -> LoopConfig:
        """The training loop's settings (call on a config filled from its preset)."""
        return LoopConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                          weight_decay=self.weight_decay, optimizer=self.optimizer,
                          workers=self.workers, amp=self.amp, sync_bn=self.sync_bn,
                          resume=self.resume)


def fill_from_preset(cfg: Any, presets: dict[str, dict[str, Any]]) -> Any:
    """Fill the options a user left unset (None) from the backbone's preset.

    BatchNorm is frozen by default when starting from pretrained weights: their
    statistics beat those of a batch of a few crops (PSA, IRN); a network trained from
    scratch must learn them.
    """
    if cfg.backbone not in presets:
        raise WsssError(f"--backbone {cfg.backbone!r}: choose from {', '.join(presets)}")
    preset = presets[cfg.backbone]
    cfg = replace(cfg, **{k: v for k, v in preset.items() if getattr(cfg, k) is None})
    if cfg.freeze_bn is None:
        cfg = replace(cfg, freeze_bn=cfg.pretrained != "none")
    return cfg


@dataclass
class Stage:
    """A running stage: its workdir, log and settings hash."""

    name: str
    workdir: Workdir
    logger: logging.Logger
    digest: str
    started: float
    finished_before: bool  # done earlier with exactly these settings
    writes_state: bool = True  # False on the ranks > 0 of a torchrun job


def start_stage(
    name: str, cfg: Any, out_dir: Path, outputs: Sequence[Path], overwrite: bool,
    extra_settings: dict[str, Any] | None = None,
) -> Stage:
    """Record the options, check the settings against existing outputs, open the log.

    ``extra_settings`` ties the outputs to their inputs (e.g. the digest of the model
    file), so that retraining a model invalidates what was made from the old one.

    Under ``torchrun`` (training stages only) rank 0 alone checks and writes
    ``state.json``, ``config.toml`` and ``log.txt``; the other ranks take its decision
    (or its error) and log nothing.
    """
    rank = Dist.from_env()
    if rank.world > 1:
        if not isinstance(cfg, TrainingConfig):
            raise WsssError(f"{name} is not a training stage: run it as separate processes "
                            "with --shard I/N (or a SLURM array), not under torchrun")
        init_distributed(cfg.runtime)
    workdir = Workdir(cfg.workdir)
    settings = {**settings_of(cfg), **(extra_settings or {})}
    shard = Shard.parse(cfg.shard) if hasattr(cfg, "shard") else Shard()
    outcome: tuple[str, bool] | str = ""
    if rank.is_main:
        try:
            outcome = workdir.claim(name, settings, outputs, overwrite, shared=shard.count > 1)
            workdir.record_config(name, options_of(cfg))
        except WsssError as e:
            outcome = e.message
    outcome = from_main(outcome, rank)
    if isinstance(outcome, str):  # every rank fails alike instead of waiting for rank 0
        raise WsssError(outcome)
    digest, finished = outcome
    if rank.is_main:
        logger = stage_logger(name, out_dir / "log.txt", cfg.runtime.quiet)
    else:
        logger = logging.getLogger(f"wsss.{name}.rank{rank.rank}")
        logger.handlers[:] = [logging.NullHandler()]
        logger.propagate = False
    logger.info("wsss %s %s (settings %s)", wsss_cli.__version__, name, digest)
    if overwrite and shard.count > 1:
        logger.info("--overwrite with shard %s: only outputs made with other settings are removed",
                    shard)
    return Stage(name, workdir, logger, digest, time.time(), finished, rank.is_main)


def upstream(workdir: Path, *stages: str) -> dict[str, str | None]:
    """Settings hashes of the stages whose outputs a stage reads: part of its settings,
    so that remaking an input invalidates what was made from the old one."""
    state = Workdir(workdir).state()
    return {f"input:{s}": state.get(s, {}).get("settings_hash") for s in stages}


def pending_ids(ids: Sequence[str], shard: Shard, output: Callable[[str], Path]) -> list[str]:
    """This shard's ids whose output file does not exist yet (outputs appear atomically)."""
    return [i for i in shard.select(ids) if not output(i).exists()]


def finish_per_image(stage: Stage, ids: Sequence[str], output: Callable[[str], Path]) -> None:
    """Count the outputs of the whole split; the stage is done when every one exists.

    The count is taken under the workdir lock: of shards finishing together, the last
    to write must have seen every output of the others.
    """
    if not stage.writes_state:
        return
    summary: dict[str, Any] = {}

    def count() -> dict[str, Any]:
        present = sum(output(i).exists() for i in ids)
        summary.update(status="done" if present == len(ids) else "partial", count=present,
                       total=len(ids))
        return summary

    stage.workdir.update_stage(stage.name, count, seconds=round(time.time() - stage.started, 2),
                               versions=versions())
    stage.logger.info("%d/%d outputs present (%s)", summary["count"], len(ids), summary["status"])


def finish_training(stage: Stage, **fields_: Any) -> None:
    """Mark a training stage done (rank 0 only under torchrun)."""
    if not stage.writes_state:
        return
    stage.workdir.update_stage(stage.name, status="done",
                               seconds=round(time.time() - stage.started, 2),
                               versions=versions(), **fields_)


def versions() -> dict[str, str]:
    import torch

    return {"wsss": wsss_cli.__version__, "torch": torch.__version__, "numpy": np.__version__}


def prepare_backbone(name: str, pretrained: str, freeze_bn: bool, workdir: Path,
                     **options: int) -> Any:
    """Build backbone ``name`` (``options`` go to its constructor) with its initial weights.

    ``pretrained``: ``none``, ``imagenet``, a path, or ``cls`` for the backbone of the
    trained classifier ``WORKDIR/cls/model.pt`` (same backbone required).
    """
    from wsss_cli.models.backbones import build_backbone, freeze_batchnorm
    from wsss_cli.models.weights import load_pretrained
    from wsss_cli.training import check_meta, load_checkpoint

    backbone = build_backbone(name, **options)
    if pretrained == "cls":
        path = Path(workdir) / "cls" / "model.pt"
        ckpt = load_checkpoint(path)
        check_meta(path, ckpt.get("meta", {}), {"backbone": name})
        prefix = "backbone."
        backbone.load_state_dict({k[len(prefix):]: v for k, v in ckpt["model"].items()
                                  if k.startswith(prefix)})
    else:
        load_pretrained(backbone, name, pretrained)
    if freeze_bn:
        freeze_batchnorm(backbone)
    return backbone
