"""train-seg: a DeepLab-style segmentation network trained on the pseudo-labels.

Cross-entropy (255 = ignore) between the logits, upsampled to the crop, and the labels
of ``WORKDIR/pseudo`` (or ``--labels DIR``), optionally without the background next to
objects (``--ignore-band``); random rescaling (0.5-1.5), crop and flip (no colour jitter,
as DeepLab); the shared training loop (poly schedule, head at 10x, checkpoints, AMP on
CUDA). With ``--val-split`` the model is scored against that split's ground truth every
``--val-every`` epochs and the mIoU goes to ``metrics.jsonl``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch.nn.functional as F
from torch import nn

from wsss_cli import ops
from wsss_cli.data.augment import AugmentConfig
from wsss_cli.data.dataset import VocDataset
from wsss_cli.data.loaders import SegmentationSet
from wsss_cli.errors import WsssError
from wsss_cli.models.backbones import build_backbone
from wsss_cli.models.segmentation import SegNet
from wsss_cli.runtime import Runtime
from wsss_cli.stages.common import (
    TrainingConfig,
    fill_from_preset,
    finish_training,
    prepare_backbone,
    start_stage,
    upstream,
)
from wsss_cli.stages.predict import class_probs
from wsss_cli.training import EpochHook, fit, param_groups

# DeepLab v2's VOC recipe (batch 10, lr 2.5e-4 with the head at 10x, weight decay 5e-4,
# crop 321, 20k iterations = ~20 epochs of train_aug). tiny starts from the classifier's
# backbone and trains with AdamW like its other stages; measured on the toy and held-out
# sets (val, flip + CRF, seed 0): 20 epochs beat 10 by +1.2 (toy) and +0.1 (held-out);
# batch 8, lr 1e-3 and scale range 0.75-1.25 each won on one set and lost on the other.
# Its ignore band: the background within 20 px of an object that looks like the object
# (CIELAB distance to the object's mean colour < 1.5 x that to the band's background mean)
# is left out of the loss; without it the net cut the toy's thin arms and corners even
# shorter than its pseudo-labels do (cross 50.6 val IoU vs 74.3). The whole 6 px band gave
# the toy +2.9 / +3.6 (seeds 0 / 1) but cost the held-out set (bench/heldout_data.py,
# photo backgrounds) 1.5 / 8.8 on its 60 val images, as the net bled into the photos; the
# colour test keeps that plain background: toy +2.3 / +2.5 over no band, held-out 0 / -2.4
# (60 val), +0.6 / -0.8 (200 val); 12 / 16 / 24 px or ratio 1 / 2 did no better on both
# (README, train-seg). Ignoring both sides of the boundary (4 px) cost 7 (toy) and 5.
_DEEPLAB = dict(pretrained="imagenet", optimizer="sgd", epochs=20, batch_size=10, lr=2.5e-4,
                weight_decay=5e-4, crop_size=321, refine=False, ignore_band=0,
                ignore_band_color=0.0)
PRESETS: dict[str, dict] = {
    **{name: _DEEPLAB for name in ("resnet38", "resnet50", "resnet101", "vgg16")},
    "tiny": dict(pretrained="cls", optimizer="adamw", epochs=20, batch_size=16, lr=5e-4,
                 weight_decay=5e-4, crop_size=128, freeze_bn=False, refine=True, ignore_band=20,
                 ignore_band_color=1.5),
}
# The ResNets' layer4 is undilated for the classifier (IRN); DeepLab's ASPP rates assume
# a dilated last stage, so it gets dilation 2 here (output stride 16, as DeepLab v3).
BACKBONE_OPTIONS: dict[str, dict[str, int]] = {"resnet50": {"layer4_dilation": 2},
                                              "resnet101": {"layer4_dilation": 2}}


@dataclass(frozen=True)
class TrainSegConfig(TrainingConfig):
    backbone: str = "resnet38"
    labels: Path | None = None  # default WORKDIR/pseudo
    head: str = "aspp"
    refine: bool | None = None  # None = the backbone's preset
    ignore_band: int | None = None  # px of background ignored around objects; None = preset
    ignore_band_color: float | None = None  # only band pixels this near the object's colour
    scale_range: tuple[float, float] = (0.5, 1.5)
    val_split: str | None = None
    val_every: int = 1


def build_seg_net(backbone: str, num_classes: int, head: str, refine: bool) -> SegNet:
    return SegNet(build_backbone(backbone, **BACKBONE_OPTIONS.get(backbone, {})), num_classes, head,
                  refine)


def seg_net_from_checkpoint(ckpt: dict[str, Any]) -> SegNet:
    """The network of a train-seg checkpoint (``{"model", "meta"}``), weights loaded."""
    meta = ckpt["meta"]
    model = build_seg_net(meta["backbone"], meta["num_classes"], meta["head"], meta["refine"])
    model.load_state_dict(ckpt["model"])
    return model


def validation_hook(cfg: TrainSegConfig, data: VocDataset, logger: Any) -> EpochHook | None:
    """Every ``val_every`` epochs (and after the last): mIoU on ``val_split``'s ground truth,
    single scale, no flip."""
    if cfg.val_split is None:
        return None
    ids = data.ids(cfg.val_split)
    if not data.has_masks(ids):
        logger.info("--val-split %s has no ground truth; not evaluating", cfg.val_split)
        return None
    runtime: Runtime = cfg.runtime

    def evaluate(epoch: int, model: nn.Module) -> dict[str, float]:
        if epoch % cfg.val_every and epoch != cfg.epochs:
            return {}
        device = next(model.parameters()).device
        model.eval()
        confusion = np.zeros((data.num_classes, data.num_classes), np.int64)
        for image_id in runtime.progress(ids, f"val {cfg.val_split}"):
            image = data.read_image(image_id)
            probs = class_probs(model, image, (1.0,), False, device, cfg.amp and device.type == "cuda")
            confusion += ops.confusion_matrix(probs.argmax(0), data.read_mask(image_id, image.shape[:2]),
                                              data.num_classes)
        miou = round(100 * ops.miou(confusion)[0], 4)
        logger.info("epoch %d: %s mIoU %.2f", epoch, cfg.val_split, miou)
        return {"val_miou": miou}

    return evaluate


def run(cfg: TrainSegConfig) -> Path:
    """Train the segmentation network; returns ``WORKDIR/seg/model.pt``."""
    cfg = fill_from_preset(cfg, PRESETS)
    data = VocDataset(cfg.data)
    ids = data.ids(cfg.split)
    workdir = Path(cfg.workdir)
    label_dir = Path(cfg.labels or workdir / "pseudo")
    missing = [i for i in ids if not (label_dir / f"{i}.png").exists()]
    if missing:
        hint = "" if cfg.labels else " (run random-walk or make-pseudo first, or give --labels)"
        raise WsssError(f"{label_dir / missing[0]}.png: labels missing for {len(missing)} of "
                        f"{len(ids)} images{hint}")
    if cfg.labels is not None:
        cfg = replace(cfg, labels=label_dir)
    out_dir = workdir / "seg"
    inputs = {} if cfg.labels else upstream(workdir, "random-walk")
    stage = start_stage("train-seg", cfg, out_dir, [out_dir / "model.pt", out_dir / "last.pt"],
                        cfg.overwrite, inputs)
    if stage.finished_before and (out_dir / "model.pt").exists():
        stage.logger.info("already trained with these settings: %s", out_dir / "model.pt")
        return out_dir / "model.pt"

    cfg.runtime.seed_everything()
    backbone = prepare_backbone(cfg.backbone, cfg.pretrained, cfg.freeze_bn, workdir,
                                **BACKBONE_OPTIONS.get(cfg.backbone, {}))
    model = SegNet(backbone, data.num_classes, cfg.head, cfg.refine)
    # DeepLab's augmentation has no colour jitter; on the toy data, where colour tells the
    # classes apart, jitter cost 9 val mIoU (58 vs 67 after 6 epochs)
    aug = AugmentConfig(crop=cfg.crop_size, resize_long=cfg.resize_long, scale=cfg.scale_range,
                        color_jitter=0.0)
    dataset = SegmentationSet(data, ids, label_dir, aug, cfg.runtime.seed, cfg.ignore_band,
                              cfg.ignore_band_color)
    stage.logger.info("%d images of split %s, labels %s, backbone %s (%s), head %s", len(ids),
                      cfg.split, label_dir, cfg.backbone, cfg.pretrained, cfg.head)

    def step(net, batch):
        images, labels = batch
        logits = F.interpolate(net(images).float(), labels.shape[-2:], mode="bilinear",
                               align_corners=False)
        return F.cross_entropy(logits, labels, ignore_index=255)

    loop = cfg.loop()
    meta = {"kind": "seg", "backbone": cfg.backbone, "num_classes": data.num_classes,
            "head": cfg.head, "refine": cfg.refine, "classes": list(data.classes)}
    final = fit(model, param_groups(model.backbone, model.head, cfg.lr, loop.head_lr_mult),
                dataset, step, loop, out_dir, cfg.runtime, meta, stage.logger,
                validation_hook(cfg, data, stage.logger))
    finish_training(stage, images=len(ids))
    return final
