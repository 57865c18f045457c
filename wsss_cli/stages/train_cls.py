"""train-cls: the multi-label classifier whose class activation maps seed everything else.

The network and its loss come from the CAM method (``--method``, ``cam_methods``; the
plain CAM: multi-label soft margin). Defaults come from the backbone's preset family (PSA
for resnet38/vgg16, IRN for resnet50/101, our own for tiny: docs/methods.md#train-cls);
any option given on the command line or in the TOML config wins over the preset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from torch import Tensor, nn

from wsss_cli import ops
from wsss_cli.cam_methods import CAM_METHODS, CamMethod, acol, erasing, mdc
from wsss_cli.data.augment import AugmentConfig
from wsss_cli.data.dataset import open_dataset
from wsss_cli.data.loaders import ClassificationSet
from wsss_cli.models.kinds import CLASSIFIER
from wsss_cli.options import option
from wsss_cli.stages.common import (
    TrainingConfig,
    backbone_option,
    fill_from_preset,
    fill_unset,
    training_run,
)
from wsss_cli.training import Dist, StepContext, StepFn, fit, param_groups
from wsss_cli.workdir import ArtifactSet, Workdir

STAGE = "train-cls"
# PSA's train_cls.py (colour jitter 0.3 with hue 0.1), IRN's run_sample.py (no colour
# jitter), and for tiny what trains from scratch on a CPU (docs/results.md#train-cls)
PRESETS: dict[str, dict] = {
    "psa": dict(pretrained="imagenet", optimizer="sgd", epochs=15, batch_size=16, lr=0.1,
                weight_decay=5e-4, crop_size=448, resize_long=(256, 512), dropout=0.5,
                color_jitter=0.3),
    "irn": dict(pretrained="imagenet", optimizer="sgd", epochs=5, batch_size=16, lr=0.1,
                weight_decay=1e-4, crop_size=512, resize_long=(320, 640), dropout=0.0,
                color_jitter=0.0),
    "tiny": dict(pretrained="none", optimizer="adamw", epochs=24, batch_size=16, lr=2e-3,
                 weight_decay=5e-4, crop_size=128, resize_long=(96, 160), dropout=0.0,
                 color_jitter=0.0),
}


@dataclass(frozen=True, kw_only=True)
class TrainClsConfig(TrainingConfig):
    PRESETS: ClassVar[dict[str, dict]] = PRESETS
    backbone: str = backbone_option()
    method: str = option("cam", "CAM method: what the classifier learns and how dump-cams reads "
                                "its maps: cam, seam, has, acol, erasing, mdc (docs/methods.md). "
                                "A method may bring its own presets (seam: train_SEAM.py's).",
                         hashed="unless-default", metavar="NAME")
    hide_and_seek: bool | None = option(None, "Hide a random grid of cells in every training "
                                              "image (Hide-and-Seek), with any method.",
                                        secondary="no-hide-and-seek", hashed="unless-default",
                                        default_text="on for has, off otherwise")
    mixup: float | None = option(None, "Mix pairs of training images and their labels with "
                                       "weights drawn from Beta(ALPHA, ALPHA) (mixup), with any "
                                       "method.", min=0, min_open=True, metavar="ALPHA",
                                 hashed="unless-default", default_text="off")
    seam_scale: float | None = option(None, "--method seam: the second view is the image "
                                            "rescaled by this.", min=0.05, max=0.95,
                                      hashed="unless-default",
                                      default_text="SEAM's 0.3; 0.7 for tiny")
    acol_threshold: float | None = option(None, "--method acol: head A's normalised map erases "
                                                "the features head B sees where it is at least "
                                                "this.", min=0, max=1, hashed="unless-default",
                                          default_text=str(acol.THRESHOLD))
    erase_steps: int | None = option(None, "--method erasing: classifiers trained in turn, each "
                                           "on the images with the earlier ones' regions erased.",
                                     min=1, max=10, hashed="unless-default",
                                     default_text=str(erasing.STEPS))
    erase_threshold: float | None = option(None, "--method erasing: a step's regions are where "
                                                 "its CAM (divided by its maximum) reaches this.",
                                           min=0, max=1, min_open=True, hashed="unless-default",
                                           default_text=str(erasing.THRESHOLD))
    mdc_rates: tuple[int, ...] | None = option(None, "--method mdc: dilation rates of the CAM "
                                                     "heads; the first one's map is the base.",
                                               hashed="unless-default",
                                               default_text=" ".join(map(str, mdc.RATES)))
    dropout: float | None = option(None, "Dropout before the classifier.", cli=False)
    color_jitter: float | None = option(None, "Colour jitter strength.", cli=False)

    def resolved(self) -> TrainClsConfig:
        """Every option left unset, filled from the backbone's preset (the method's own
        presets where it has them) and the method's own options."""
        method = CAM_METHODS.get(self.method)
        return fill_unset(fill_from_preset(self, method.presets or PRESETS), method.options)


def run(cfg: TrainClsConfig) -> Path:
    """Train the classifier; returns ``WORKDIR/<out>/model.pt`` (default ``cls``)."""
    cfg = cfg.resolved()
    return CAM_METHODS.get(cfg.method).configured(cfg).train(cfg, cfg.method)


def train_network(cfg: TrainClsConfig, method: CamMethod, name: str,
                  erased: ArtifactSet | None = None) -> Path:
    """Train ``method``'s network (recorded as method ``name``) on a resolved config, on
    images with the ``erased`` regions set to the mean where given; returns its model."""
    data = open_dataset(cfg.data)
    ids = data.ids(cfg.split)
    inputs = None if erased is None else Workdir(cfg.workdir).producer_hashes(
        Workdir(cfg.workdir).producer_of(erased.name) or "")
    with training_run(STAGE, cfg, CLASSIFIER, data, ids, inputs) as job:
        if job.finished_before:
            return job.model
        cfg.runtime.seed_everything()
        model = method.build(cfg.initial_backbone(), data.num_classes - 1, cfg.dropout)
        aug = AugmentConfig(crop=cfg.crop_size, resize_long=cfg.resize_long,
                            color_jitter=cfg.color_jitter)
        dataset = ClassificationSet(data, ids, aug, cfg.runtime.seed,
                                    erased.folder if erased else None)
        job.logger.info("%d images of split %s, %d classes, backbone %s (%s), method %s", len(ids),
                        cfg.split, data.num_classes - 1, cfg.backbone, cfg.pretrained, name)
        loop = cfg.loop()
        meta = {"kind": CLASSIFIER, "backbone": cfg.backbone, "num_classes": data.num_classes,
                "classes": list(data.classes), "method": name, "method_options": method.recorded()}
        head_mult = method.head_lr_mult or loop.head_lr_mult
        final = fit(model, param_groups(model.backbone, model.head, cfg.lr, head_mult),
                    dataset, with_batch_augmentation(method.loss, cfg), loop, job.model_dir,
                    cfg.runtime, meta, job.logger)
        job.record.update(images=len(ids))
    return final


def with_batch_augmentation(loss: StepFn, cfg: TrainClsConfig) -> StepFn:
    """``loss`` on batches hidden (Hide-and-Seek) and mixed (mixup) as ``cfg`` asks; the
    draws depend on the seed and the step alone, so a resumed run repeats them."""
    if not cfg.hide_and_seek and not cfg.mixup:
        return loss
    grid_sizes = ops.scaled_grid_sizes(cfg.crop_size)

    def augmented(net: nn.Module, batch: list[Tensor], ctx: StepContext) -> Tensor:
        rng = np.random.default_rng([cfg.runtime.seed, ctx.epoch, ctx.step, Dist.from_env().rank])
        images, labels = batch
        if cfg.hide_and_seek:
            images = ops.hide_patches(images, rng, grid_sizes)
        if cfg.mixup:
            images, labels = ops.mixup(images, labels, rng, cfg.mixup)
        return loss(net, [images, labels], ctx)

    return augmented
