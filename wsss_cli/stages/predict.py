"""predict: a trained segmentation (train-seg) or single-stage model -> palette PNGs.

Per image: the softmax of ``model.segment`` at every scale and on the mirror image,
upsampled to the image size and averaged; the dense CRF on that distribution (default, as
in DeepLab; ``--no-crf`` skips it); the arg-max written as a VOC palette PNG at image size.
Works on a dataset split (``--data --split``) or on a plain folder of images
(``--images``); resumable and shardable like every per-image stage.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from wsss_cli.data.dataset import ImageFolder, VocDataset
from wsss_cli.errors import WsssError
from wsss_cli.inference import LabelTask, multiscale_sum, prepare_inference, write_labels
from wsss_cli.runtime import Runtime
from wsss_cli.stages.common import finish_per_image, pending_ids, start_stage, unhashed
from wsss_cli.training import check_meta, load_checkpoint
from wsss_cli.workdir import Shard, file_digest


@dataclass(frozen=True)
class PredictConfig:
    workdir: Path = unhashed()
    data: Path | None = None
    split: str = "val"
    images: Path | None = None  # a plain image folder instead of --data/--split
    model: Path | None = None  # default WORKDIR/seg/model.pt, else WORKDIR/single_stage/model.pt
    scales: tuple[float, ...] = (1.0,)
    flip: bool = True
    crf: bool = True  # DeepLab v1/v2 end with it; tiny nets: +2.2 val mIoU toy, +9.8 held-out
    crf_iters: int = 10
    out: str | None = None  # folder under WORKDIR; default pred/<split or images folder name>
    amp: bool = True
    workers: int = unhashed(2)
    jobs: int = unhashed(1)
    shard: str | None = unhashed(None)
    overwrite: bool = unhashed(False)
    runtime: Runtime = Runtime()


# checkpoint kind -> (stage module, its function building the network from a checkpoint);
# imported on use, so a seg model does not import the single-stage network and back
_BUILDERS = {"seg": ("train_seg", "seg_net_from_checkpoint"),
             "single-stage": ("train_single_stage", "single_stage_net_from_checkpoint")}


def load_segmenter(path: Path, num_classes: int | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The model of a train-seg or train-single-stage checkpoint (eval mode) and its meta.

    ``num_classes`` (background included), when given, must match the checkpoint's.
    """
    ckpt = load_checkpoint(path)
    meta = ckpt.get("meta", {})
    if meta.get("kind") not in _BUILDERS:
        raise WsssError(f"{path}: a {meta.get('kind', 'unknown')!r} checkpoint, not a "
                        "train-seg or train-single-stage model")
    if num_classes is not None:
        check_meta(path, meta, {"num_classes": num_classes})
    module_name, builder = _BUILDERS[meta["kind"]]
    module = importlib.import_module(f"wsss_cli.stages.{module_name}")
    return getattr(module, builder)(ckpt).eval(), meta


def class_probs(model: nn.Module, image: np.ndarray, scales: tuple[float, ...], flip: bool,
                device: torch.device, amp: bool = False) -> np.ndarray:
    """Class distribution ``[K, H, W]`` float32 of an RGB uint8 image ``[H, W, 3]``: the
    softmax of ``model.segment`` averaged over scales and flips."""
    total = multiscale_sum(lambda x: model.segment(x).float().softmax(dim=1), image, scales, flip,
                           device, amp)
    return (total / (len(scales) * (2 if flip else 1))).cpu().numpy()


def default_model(workdir: Path) -> Path:
    """``seg/model.pt`` when train-seg ran, else ``single_stage/model.pt``."""
    for candidate in (workdir / "seg" / "model.pt", workdir / "single_stage" / "model.pt"):
        if candidate.exists():
            return candidate
    raise WsssError(f"--model not given and neither {workdir / 'seg/model.pt'} nor "
                    f"{workdir / 'single_stage/model.pt'} exists (run train-seg first)")


def _source(cfg: PredictConfig) -> tuple[VocDataset | ImageFolder, list[str], str]:
    """(image reader, ids, default output name) of ``--images`` or ``--data --split``."""
    if cfg.images is not None:
        folder = ImageFolder(cfg.images)
        return folder, folder.ids(), Path(cfg.images).resolve().name
    if cfg.data is None:
        raise WsssError("give --data (with --split) or --images")
    data = VocDataset(cfg.data)
    return data, data.ids(cfg.split), cfg.split


def run(cfg: PredictConfig) -> Path:
    """Write ``WORKDIR/<out>/<id>.png`` for every image; returns the folder."""
    workdir = Path(cfg.workdir)
    images, ids, name = _source(cfg)
    model_path = Path(cfg.model) if cfg.model else default_model(workdir)
    num_classes = images.num_classes if isinstance(images, VocDataset) else None
    model, _ = load_segmenter(model_path, num_classes)
    out = cfg.out or f"pred/{name}"
    out_dir = workdir / out
    stage = start_stage(f"predict:{out}", cfg, out_dir, [out_dir], cfg.overwrite,
                        {"model_digest": file_digest(model_path)})
    output = lambda i: out_dir / f"{i}.png"  # noqa: E731
    todo = pending_ids(ids, Shard.parse(cfg.shard), output)
    stage.logger.info("%d images to do (%d in %s), model %s", len(todo), len(ids), name, model_path)

    device, amp, loader = prepare_inference(model, cfg.runtime, cfg.amp, images, todo, cfg.workers)

    def predicted() -> Iterator[LabelTask]:
        for image_id, image in loader:
            image = image.numpy()
            probs = class_probs(model, image, cfg.scales, cfg.flip, device, amp)
            yield output(image_id), image, probs, np.arange(1, len(probs))

    write_labels(predicted(), cfg.crf, cfg.crf_iters, cfg.jobs,
                 lambda items: cfg.runtime.progress(items, "predict", total=len(todo)))
    finish_per_image(stage, ids, output)
    return out_dir
