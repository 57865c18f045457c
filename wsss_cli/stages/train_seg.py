"""train-seg: a DeepLab-style segmentation network trained on the pseudo-labels.

``--loss`` (``seg_losses``): cross-entropy (255 = ignore) on the dense labels of
``WORKDIR/pseudo`` (or ``--labels DIR``), or SEC's seed, expand and constrain losses on the
sparse seeds of ``WORKDIR/seeds``; the shared training loop (poly or step schedule, head
at 10x, checkpoints, AMP on CUDA). With ``--val-split`` the model is scored against that
split's ground truth every ``--val-every`` epochs and the mIoU goes to ``metrics.jsonl``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from torch import nn

from wsss_cli import ops
from wsss_cli.data.dataset import LabelledDataset, open_dataset
from wsss_cli.errors import WsssError
from wsss_cli.inference import class_probs
from wsss_cli.models.kinds import SEGMENTATION
from wsss_cli.models.segmentation import BACKBONE_OPTIONS, HEADS, SegNet
from wsss_cli.options import option
from wsss_cli.runtime import Runtime
from wsss_cli.seg_losses import SEG_LOSSES
from wsss_cli.stages.common import (
    TrainingConfig,
    backbone_option,
    fill_from_preset,
    set_option,
    training_run,
)
from wsss_cli.training import EpochHook, LoopConfig, fit, param_groups
from wsss_cli.workdir import Layout, Workdir, entry_name

STAGE = "train-seg"
# DeepLab v2's VOC recipe (batch 10, lr 2.5e-4 with the head at 10x, weight decay 5e-4,
# crop 321, 20k iterations = ~20 epochs of train_aug); tiny starts from the classifier's
# backbone with AdamW and ignores the object-coloured background next to objects
# (docs/results.md#train-seg)
_DEEPLAB = dict(pretrained="imagenet", optimizer="sgd", epochs=20, batch_size=10, lr=2.5e-4,
                weight_decay=5e-4, crop_size=321, head="aspp", refine=False, ignore_band=0,
                ignore_band_color=0.0)
PRESETS: dict[str, dict] = {
    "psa": _DEEPLAB,
    "irn": _DEEPLAB,
    "tiny": dict(pretrained="cls", optimizer="adamw", epochs=20, batch_size=16, lr=5e-4,
                 weight_decay=5e-4, crop_size=128, freeze_bn=False, head="aspp", refine=True,
                 ignore_band=20, ignore_band_color=1.5),
}


@dataclass(frozen=True, kw_only=True)
class TrainSegConfig(TrainingConfig):
    PRESETS: ClassVar[dict[str, dict]] = PRESETS
    backbone: str = backbone_option()
    pretrained: str | None = option(None, "Initial backbone weights; cls = the trained "
                                          "classifier's.", metavar="PATH|imagenet|none|cls",
                                    default_text="cls for tiny, imagenet otherwise")
    labels: Path | None = option(None, "Folder of <id>.png training labels (255 = ignore), "
                                       "instead of a set under WORKDIR.", exists=True,
                                 file_okay=False, default_text="WORKDIR/<pseudo>")
    loss: str = option("ce", "Cross-entropy on dense pseudo-labels, or SEC's seed + expand + "
                             "constrain losses on sparse seeds (make-seeds).",
                       choices=SEG_LOSSES.names(), hashed="unless-default")
    pseudo: str | None = set_option(None, "Label set to train on",
                                    default_text="pseudo; seeds with --loss sec")
    head: str | None = option(None, "DeepLab v2 ASPP (rates 6/12/18/24) or DeepLab v1 LargeFOV "
                                    "(rate 12).", choices=HEADS,
                              default_text="aspp; largefov with --loss sec")
    refine: bool | None = option(None, "Sharpen the head's scores with the backbone's stride-4 map "
                                       "(a DeepLab v3+ style decoder).",
                                 default_text="on for tiny, off for the papers' backbones")
    scale_range: tuple[float, float] = option((0.5, 1.5), "Random rescaling range of the training "
                                                          "images.", metavar="MIN MAX")
    ignore_band: int | None = option(None, "Ignore the labels' background within PX pixels of an "
                                           "object, where pseudo-labels are least reliable. 0 = off.",
                                     min=0, metavar="PX",
                                     default_text="20 for tiny (128 px images), 0 for the papers' "
                                                  "backbones, as DeepLab")
    ignore_band_color: float | None = option(None, "Ignore only the band's pixels that look like the "
                                                   "object: colour distance (CIELAB) to the object's "
                                                   "mean below RATIO x that to the band's background "
                                                   "mean. 0 = the whole band.", min=0, metavar="RATIO",
                                             default_text="1.5 for tiny, 0 for the others")
    class_weights: tuple[float, ...] | None = option(
        None, "Cross-entropy weight of each class, background first (--loss ce).", min=0,
        metavar="W0 W1 ...", hashed="unless-default", default_text="1 for every class")
    val_split: str | None = option(None, "Split evaluated against its ground truth during training "
                                         "(e.g. val).")
    val_every: int = option(1, "Evaluate --val-split every N epochs.", min=1)
    lr_phases: int | None = option(None, "0: poly learning-rate schedule; N: constant over N equal "
                                         "phases, x0.1 from one to the next.", min=0, metavar="N",
                                   hashed="unless-default",
                                   default_text="0; 4 with --loss sec and the papers' backbones (SEC)")

    def loop(self) -> LoopConfig:
        return replace(super().loop(), lr_phases=self.lr_phases or 0)


def validation_hook(cfg: TrainSegConfig, data: LabelledDataset, logger: Any) -> EpochHook | None:
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


def resolved(cfg: TrainSegConfig) -> TrainSegConfig:
    """The options left unset filled from the loss's preset values over train-seg's."""
    loss = SEG_LOSSES.get(cfg.loss)
    presets = {family: {**values, **loss.presets.get(family, {})} for family, values in PRESETS.items()}
    return fill_from_preset(replace(cfg, pseudo=cfg.pseudo or loss.labels), presets)


def run(cfg: TrainSegConfig) -> Path:
    """Train the segmentation network; returns ``WORKDIR/seg/model.pt``."""
    cfg = resolved(cfg)
    loss = SEG_LOSSES.get(cfg.loss)
    data = open_dataset(cfg.data)
    ids = data.ids(cfg.split)
    layout = Layout(cfg.workdir)
    if cfg.class_weights is not None and len(cfg.class_weights) != data.num_classes:
        raise WsssError(f"--class-weights: {len(cfg.class_weights)} weights for "
                        f"{data.num_classes} classes (background first)")
    label_dir = Path(cfg.labels or layout.labels(cfg.pseudo).folder)
    missing = [i for i in ids if not (label_dir / f"{i}.png").exists()]
    if missing:
        hint = "" if cfg.labels else f" (run {loss.made_by} first, or give --labels)"
        raise WsssError(f"{label_dir / missing[0]}.png: labels missing for {len(missing)} of "
                        f"{len(ids)} images{hint}")
    if cfg.labels is not None:
        cfg = replace(cfg, labels=label_dir)
    workdir = Workdir(cfg.workdir)
    producer = workdir.producer_of(cfg.pseudo) or entry_name("random-walk", cfg.pseudo, Layout.PSEUDO)
    inputs = {} if cfg.labels else workdir.producer_hashes(producer)
    with training_run(STAGE, cfg, SEGMENTATION, data, ids, inputs) as job:
        if job.finished_before:
            return job.model
        cfg.runtime.seed_everything()
        backbone = cfg.initial_backbone(**BACKBONE_OPTIONS.get(cfg.backbone, {}))
        model = SegNet(backbone, data.num_classes, cfg.head, cfg.refine)
        dataset = loss.dataset(cfg, data, ids, label_dir)
        job.logger.info("%d images of split %s, labels %s, loss %s, backbone %s (%s), head %s",
                        len(ids), cfg.split, label_dir, cfg.loss, cfg.backbone, cfg.pretrained,
                        cfg.head)
        loop = cfg.loop()
        meta = {"kind": SEGMENTATION, "backbone": cfg.backbone, "num_classes": data.num_classes,
                "head": cfg.head, "refine": cfg.refine, "classes": list(data.classes)}
        final = fit(model, param_groups(model.backbone, model.head, cfg.lr, loop.head_lr_mult),
                    dataset, partial(loss.step, cfg), loop, job.model_dir, cfg.runtime, meta, job.logger,
                    validation_hook(cfg, data, job.logger))
        job.record.update(images=len(ids))
    return final
