"""train-cls: the multi-label classifier whose class activation maps seed everything else.

Loss: multi-label soft margin over the image's classes. Defaults come from the
backbone's preset (PSA for resnet38/vgg16, IRN for resnet50/101, our own for tiny);
any option given on the command line or in the TOML config wins over the preset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch.nn.functional as F

from wsss_cli.data.augment import AugmentConfig
from wsss_cli.data.dataset import VocDataset
from wsss_cli.data.loaders import ClassificationSet
from wsss_cli.models.backbones import build_backbone, freeze_batchnorm
from wsss_cli.models.classifier import CamNet
from wsss_cli.models.weights import load_pretrained
from wsss_cli.stages.common import TrainingConfig, fill_from_preset, finish_training, start_stage
from wsss_cli.training import check_meta, fit, load_checkpoint, param_groups

# Per-backbone defaults: PSA's train_cls.py (resnet38, vgg16; colour jitter 0.3 with hue
# 0.1), IRN's run_sample.py (resnet50/101; no colour jitter), and for tiny what trains
# from scratch on ~128 px images on a CPU (AdamW: SGD from scratch needs far more steps
# than a CPU demo can give it). Measured for tiny on bench/heldout_data.py (best-threshold
# CAM mIoU): colour jitter 0.3 -> 0 gave 58.9 -> 65.0 (colour is a class cue there);
# 8 -> 16 -> 24 -> 40 epochs gave 65.0 -> 70.8 -> 74.3 -> 73.0.
_PSA = dict(pretrained="imagenet", optimizer="sgd", epochs=15, batch_size=16, lr=0.1,
            weight_decay=5e-4, crop_size=448, resize_long=(256, 512), dropout=0.5,
            color_jitter=0.3)
_IRN = dict(pretrained="imagenet", optimizer="sgd", epochs=5, batch_size=16, lr=0.1,
            weight_decay=1e-4, crop_size=512, resize_long=(320, 640), dropout=0.0,
            color_jitter=0.0)
PRESETS: dict[str, dict] = {
    "resnet38": _PSA,
    "vgg16": _PSA,
    "resnet50": _IRN,
    "resnet101": _IRN,
    "tiny": dict(pretrained="none", optimizer="adamw", epochs=24, batch_size=16, lr=2e-3,
                 weight_decay=5e-4, crop_size=128, resize_long=(96, 160), dropout=0.0,
                 color_jitter=0.0),
}


@dataclass(frozen=True)
class TrainClsConfig(TrainingConfig):
    backbone: str = "resnet38"
    dropout: float | None = None
    color_jitter: float | None = None  # AugmentConfig.color_jitter; from the preset

    def resolved(self) -> TrainClsConfig:
        """Every option left unset, filled from the backbone's preset."""
        return fill_from_preset(self, PRESETS)


def build_cam_net(backbone: str, num_classes: int, dropout: float = 0.0) -> CamNet:
    return CamNet(build_backbone(backbone), num_classes - 1, dropout)


def load_cam_net(path: Path, data: VocDataset) -> CamNet:
    """The trained classifier at ``path``, checked against the dataset's classes."""
    ckpt = load_checkpoint(path)
    meta = ckpt.get("meta", {})
    check_meta(path, meta, {"kind": "cls", "num_classes": data.num_classes})
    model = build_cam_net(meta["backbone"], data.num_classes)
    model.load_state_dict(ckpt["model"])
    return model.eval()


def run(cfg: TrainClsConfig) -> Path:
    """Train the classifier; returns ``WORKDIR/cls/model.pt``."""
    cfg = cfg.resolved()
    data = VocDataset(cfg.data)
    ids = data.ids(cfg.split)
    out_dir = Path(cfg.workdir) / "cls"
    stage = start_stage("train-cls", cfg, out_dir, [out_dir / "model.pt", out_dir / "last.pt"],
                        cfg.overwrite)
    if stage.finished_before and (out_dir / "model.pt").exists():
        stage.logger.info("already trained with these settings: %s", out_dir / "model.pt")
        return out_dir / "model.pt"

    cfg.runtime.seed_everything()
    model = build_cam_net(cfg.backbone, data.num_classes, cfg.dropout)
    load_pretrained(model.backbone, cfg.backbone, cfg.pretrained)
    if cfg.freeze_bn:
        freeze_batchnorm(model.backbone)
    aug = AugmentConfig(crop=cfg.crop_size, resize_long=cfg.resize_long,
                        color_jitter=cfg.color_jitter)
    dataset = ClassificationSet(data, ids, aug, cfg.runtime.seed)
    stage.logger.info("%d images of split %s, %d classes, backbone %s (%s)", len(ids), cfg.split,
                      data.num_classes - 1, cfg.backbone, cfg.pretrained)

    def step(net, batch):
        images, labels = batch
        return F.multilabel_soft_margin_loss(net(images).float(), labels)

    loop = cfg.loop()
    meta = {"kind": "cls", "backbone": cfg.backbone, "num_classes": data.num_classes,
            "classes": list(data.classes)}
    final = fit(model, param_groups(model.backbone, model.head, cfg.lr, loop.head_lr_mult),
                dataset, step, loop, out_dir, cfg.runtime, meta, stage.logger)
    finish_training(stage, images=len(ids))
    return final
