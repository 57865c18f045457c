"""train-single-stage: segmentation from image labels in one network (Araslanov & Roth 2020).

Loss per batch: multi-label soft margin on the nGWP + focal-penalty class scores, plus,
after the first ``pretrain_epochs`` epochs, a class-balanced cross-entropy of the mask
logits against pseudo ground truth: the network's own masks (detached) refined by PAMR
on the image, absent classes removed, thresholded by ``ops.pseudo_gt``.

Defaults: the reference's configs (configs/voc_*.yaml of visinf/1-stage-wseg) for the
ImageNet backbones; for tiny what trains from scratch on toy-sized images on a CPU.
Unlike the reference, the learning rate follows the shared poly schedule (it kept it
constant), random rescaling is relative (``--scale-range``) before a square crop,
whereas the reference's random resized crop took 90-100% of the image area, and a
backbone trained from scratch (``--pretrained none``) gets the new layers' learning rate
instead of a tenth of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wsss_cli import ops
from wsss_cli.data.augment import AugmentConfig
from wsss_cli.data.dataset import open_dataset
from wsss_cli.data.loaders import ClassificationSet
from wsss_cli.errors import WsssError
from wsss_cli.models.kinds import SINGLE_STAGE
from wsss_cli.models.single_stage import HeadConfig, SingleStageNet, head_defaults
from wsss_cli.options import default_of, option
from wsss_cli.stages.common import (
    TrainingConfig,
    backbone_option,
    fill_from_preset,
    training_run,
)
from wsss_cli.training import StepContext, fit, param_groups

STAGE = "train-single-stage"

# The reference's configs/voc_*.yaml; its colour jitter (brightness/contrast/saturation
# 0.3, hue 0.1) is AugmentConfig's 0.3.
_REFERENCE = dict(pretrained="imagenet", optimizer="sgd", batch_size=16, lr=1e-3,
                  weight_decay=5e-4, pretrain_epochs=5, color_jitter=0.3)
PRESETS: dict[str, dict] = {
    "resnet38": {**_REFERENCE, "epochs": 24, "crop_size": 321},
    "vgg16": {**_REFERENCE, "epochs": 32, "crop_size": 448},
    "resnet50": {**_REFERENCE, "epochs": 20, "crop_size": 448, "lr": 5e-4},
    "resnet101": {**_REFERENCE, "epochs": 20, "crop_size": 448},
    # from scratch on 64-160 px images on a CPU (docs/results.md#train-single-stage)
    "tiny": dict(pretrained="none", optimizer="adamw", epochs=28, batch_size=8, lr=3e-3,
                 weight_decay=5e-4, crop_size=112, pretrain_epochs=4, color_jitter=0.1),
}


@dataclass(frozen=True, kw_only=True)
class TrainSingleStageConfig(TrainingConfig):
    PRESETS: ClassVar[dict[str, dict]] = PRESETS
    backbone: str = backbone_option()
    pretrain_epochs: int | None = option(None, "Epochs of classification loss only before the mask "
                                               "loss joins.", min=0,
                                         default_text="per backbone; the paper's 5 of 24 for resnet38")
    focal_p: float = option(float(default_of(ops.ngwp, "focal_p")),
                            "Focal mask penalty exponent p (nGWP).", min=0)
    focal_lambda: float = option(default_of(ops.ngwp, "focal_lambda"),
                                 "Focal mask penalty weight lambda (nGWP).", min=0)
    sg_psi: float = option(default_of(ops.stochastic_gate, "psi"),
                           "Stochastic gate: probability of dropping the deep features.", min=0, max=1)
    pamr_iters: int = option(10, "PAMR iterations.", min=1)
    pamr_dilations: tuple[float, ...] = option((1, 2, 4, 8, 12, 24), "PAMR neighbourhood dilations.")
    scale_range: tuple[float, float] = option((0.9, 1.0), "Random rescaling range of the training "
                                                          "images.", metavar="MIN MAX")
    color_jitter: float | None = option(None, "Colour jitter strength.", cli=False)

    def resolved(self) -> TrainSingleStageConfig:
        """Unset options filled from the backbone's preset; dilations made integers (the
        command line parses floats; 1 and 1.0 must hash alike)."""
        cfg = fill_from_preset(self, PRESETS)
        dilations = tuple(int(d) for d in cfg.pamr_dilations)
        if (not dilations or len(set(dilations)) < len(dilations)
                or any(d != int(d) or d < 1 for d in cfg.pamr_dilations)):
            raise WsssError(f"--pamr-dilations {cfg.pamr_dilations}: expected distinct positive integers")
        low, high = cfg.scale_range
        if not 0 < low <= high:
            raise WsssError(f"--scale-range {low} {high}: expected 0 < MIN <= MAX")
        return replace(cfg, pamr_dilations=dilations, scale_range=(float(low), float(high)))

    def head_config(self) -> HeadConfig:
        return HeadConfig(**head_defaults(self.backbone), psi=self.sg_psi, focal_p=self.focal_p,
                          focal_lambda=self.focal_lambda)


def refined_masks(images: Tensor, masks: Tensor, labels: Tensor, dilations: Sequence[int],
                  iters: int) -> Tensor:
    """PAMR on the detached ``masks`` ``[B, 1 + C, h, w]`` with ``images`` ``[B, 3, H, W]``
    downscaled to the mask grid (as the reference, and ``h x w`` keeps it cheap), upscaled
    to ``H x W``, classes absent from ``labels`` ``[B, C]`` zeroed -> ``[B, 1 + C, H, W]``.

    The images may stay ImageNet-normalised: PAMR's affinities divide colour differences
    by the local standard deviation per channel, so a per-channel affine map cancels out.
    """
    small = F.interpolate(images.float(), size=masks.shape[-2:], mode="bilinear", align_corners=True)
    refined = ops.pamr(small, masks.detach().float(), dilations, iters)
    refined = F.interpolate(refined, size=images.shape[-2:], mode="bilinear", align_corners=True)
    present = torch.cat([torch.ones_like(labels[:, :1]), labels], dim=1)
    return refined * present[:, :, None, None]


def balanced_mask_loss(logits: Tensor, pseudo: Tensor, labels: Tensor) -> Tensor:
    """Class-balanced cross-entropy of ``logits`` ``[B, 1 + C, h, w]`` (upscaled) against
    the one-hot ``pseudo`` ground truth ``[B, 1 + C, H, W]`` (all-zero pixels unlabelled).

    Per image, a pixel of class ``c`` weighs ``(N - N_c) / (1 + N)`` (``N`` labelled
    pixels, ``N_c`` of class c): small classes count as much as large ones. The weighted
    sum is divided by all ``H * W`` pixels. An image contributes only when its pseudo
    ground truth holds background and every class of ``labels`` ``[B, C]``: a class the
    refinement lost would otherwise be taught as absent. Returns the batch mean (scalar).
    """
    logits = F.interpolate(logits.float(), size=pseudo.shape[-2:], mode="bilinear", align_corners=True)
    counts = pseudo.sum(dim=(2, 3))
    total = counts.sum(dim=1, keepdim=True)
    class_weight = (total - counts) / (1 + total)
    pixel_weight = (pseudo * class_weight[:, :, None, None]).sum(dim=1)
    # the class index of one-hot pixels (0 for unlabelled ones, which weigh 0); a weighted
    # sum is over 10x faster than argmax over channels on the CPU
    channel = torch.arange(pseudo.shape[1], dtype=pseudo.dtype, device=pseudo.device)
    target = (pseudo * channel[:, None, None]).sum(dim=1).long()
    ce = F.cross_entropy(logits, target, reduction="none")
    per_image = (pixel_weight * ce).flatten(1).mean(dim=1)
    required = torch.cat([torch.ones_like(labels[:, :1]), labels], dim=1) > 0
    complete = ((counts > 0) | ~required).all(dim=1)
    return (per_image * complete).mean()


@dataclass
class SingleStageStep:
    """``fit``'s step function: batch = (images, labels) -> the total loss.

    The mask loss joins after ``pretrain_epochs`` epochs (``ctx.epoch`` counts from 0):
    the masks of a network that cannot classify yet would only teach it noise. ``last``
    keeps the detached parts of the latest batch (``cls``, and ``mask`` once it counts);
    :meth:`epoch_end` gives their epoch means for ``metrics.jsonl``.
    """

    pretrain_epochs: int
    pamr_dilations: tuple[int, ...]
    pamr_iters: int
    last: dict[str, Tensor] = field(default_factory=dict)
    _sums: dict[str, Tensor] = field(default_factory=dict)
    _steps: int = 0

    def __call__(self, net: nn.Module, batch: list[Tensor], ctx: StepContext) -> Tensor:
        images, labels = batch
        out = net(images.contiguous(memory_format=torch.channels_last))
        loss = F.multilabel_soft_margin_loss(out.scores, labels)
        self.last = {"cls": loss.detach()}
        if ctx.epoch >= self.pretrain_epochs:
            refined = refined_masks(images, out.masks, labels, self.pamr_dilations, self.pamr_iters)
            mask = balanced_mask_loss(out.logits, ops.pseudo_gt(refined), labels)
            self.last["mask"] = mask.detach()
            loss = loss + mask
        for key, value in self.last.items():  # tensors: no device sync per step
            self._sums[key] = self._sums.get(key, 0) + value
        self._steps += 1
        return loss

    def epoch_end(self, epoch: int, model: nn.Module) -> dict[str, float]:
        """``fit``'s ``on_epoch_end``: the epoch means ``loss_cls`` (and ``loss_mask``)."""
        means = {f"loss_{k}": float(v) / max(self._steps, 1) for k, v in self._sums.items()}
        self._sums, self._steps = {}, 0
        return means


def run(cfg: TrainSingleStageConfig) -> Path:
    """Train the single-stage network; returns ``WORKDIR/single_stage/model.pt``."""
    cfg = cfg.resolved()
    data = open_dataset(cfg.data)
    ids = data.ids(cfg.split)
    with training_run(STAGE, cfg, SINGLE_STAGE, data, ids) as job:
        if job.finished_before:
            return job.model
        cfg.runtime.seed_everything()
        model = SingleStageNet(cfg.initial_backbone(), data.num_classes - 1, cfg.head_config())
        aug = AugmentConfig(crop=cfg.crop_size, resize_long=cfg.resize_long, scale=cfg.scale_range,
                            color_jitter=cfg.color_jitter)
        dataset = ClassificationSet(data, ids, aug, cfg.runtime.seed)
        job.logger.info("%d images of split %s, %d classes, backbone %s (%s), mask loss from epoch "
                        "%d", len(ids), cfg.split, data.num_classes - 1, cfg.backbone, cfg.pretrained,
                        cfg.pretrain_epochs + 1)
        step = SingleStageStep(cfg.pretrain_epochs, cfg.pamr_dilations, cfg.pamr_iters)
        loop = cfg.loop()
        meta = {"kind": SINGLE_STAGE, "backbone": cfg.backbone, "num_classes": data.num_classes,
                "classes": list(data.classes), "head": model.config.to_meta()}
        # from scratch the backbone is as new as the head: the 10x rate is for pretrained ones
        head_mult = 1.0 if cfg.pretrained == "none" else loop.head_lr_mult
        final = fit(model, param_groups(model.backbone, model.head, cfg.lr, head_mult), dataset,
                    step, loop, job.model_dir, cfg.runtime, meta, job.logger,
                    on_epoch_end=step.epoch_end)
        job.record.update(images=len(ids))
    return final
