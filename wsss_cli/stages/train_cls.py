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

from wsss_cli.cam_methods import CAM_METHODS
from wsss_cli.data.augment import AugmentConfig
from wsss_cli.data.dataset import VocDataset
from wsss_cli.data.loaders import ClassificationSet
from wsss_cli.models.kinds import CLASSIFIER
from wsss_cli.options import option
from wsss_cli.stages.common import (
    TrainingConfig,
    backbone_option,
    fill_from_preset,
    training_run,
)
from wsss_cli.training import fit, param_groups

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
                                "its maps: cam, seam (docs/methods.md). A method may bring its "
                                "own presets (seam: train_SEAM.py's).", hashed="unless-default",
                         metavar="NAME")
    seam_scale: float | None = option(None, "--method seam: the second view is the image "
                                            "rescaled by this.", min=0.05, max=0.95,
                                      hashed="unless-default",
                                      default_text="SEAM's 0.3; 0.7 for tiny")
    dropout: float | None = option(None, "Dropout before the classifier.", cli=False)
    color_jitter: float | None = option(None, "Colour jitter strength.", cli=False)

    def resolved(self) -> TrainClsConfig:
        """Every option left unset, filled from the backbone's preset (the method's own
        presets where it has them)."""
        return fill_from_preset(self, CAM_METHODS.get(self.method).presets or PRESETS)


def run(cfg: TrainClsConfig) -> Path:
    """Train the classifier; returns ``WORKDIR/cls/model.pt``."""
    cfg = cfg.resolved()
    method = CAM_METHODS.get(cfg.method).configured(cfg)
    data = VocDataset(cfg.data)
    ids = data.ids(cfg.split)
    with training_run(STAGE, cfg, CLASSIFIER, data, ids) as job:
        if job.finished_before:
            return job.model
        cfg.runtime.seed_everything()
        model = method.build(cfg.initial_backbone(), data.num_classes - 1, cfg.dropout)
        aug = AugmentConfig(crop=cfg.crop_size, resize_long=cfg.resize_long,
                            color_jitter=cfg.color_jitter)
        dataset = ClassificationSet(data, ids, aug, cfg.runtime.seed)
        job.logger.info("%d images of split %s, %d classes, backbone %s (%s), method %s", len(ids),
                        cfg.split, data.num_classes - 1, cfg.backbone, cfg.pretrained, cfg.method)
        loop = cfg.loop()
        meta = {"kind": CLASSIFIER, "backbone": cfg.backbone, "num_classes": data.num_classes,
                "classes": list(data.classes), "method": cfg.method}
        final = fit(model, param_groups(model.backbone, model.head, cfg.lr, loop.head_lr_mult),
                    dataset, method.loss, loop, job.model_dir, cfg.runtime, meta, job.logger)
        job.record.update(images=len(ids))
    return final

