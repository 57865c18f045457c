"""train-aff: AffinityNet on the affinity label maps (PSA §3.3).

Pairs within radius 5 on the stride-8 grid are labelled from the affinity labels
(same class: positive, split into background and foreground pairs; different classes:
negative; unsure pixels: no label) and the network learns ``a_ij = exp(-mean|f_i-f_j|)``
with PSA's balanced loss.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

from wsss_cli.data.augment import AugmentConfig
from wsss_cli.data.dataset import open_dataset
from wsss_cli.data.loaders import AffinitySet
from wsss_cli.errors import WsssError
from wsss_cli.models.affinity_net import AffinityNet, affinity_loss, pair_affinities
from wsss_cli.models.kinds import AFFINITY, CLASSIFIER
from wsss_cli.options import option
from wsss_cli.stages.common import (
    TrainingConfig,
    fill_from_preset,
    set_option,
    training_run,
)
from wsss_cli.training import fit, load_checkpoint, param_groups
from wsss_cli.workdir import Layout, Workdir, entry_name

STAGE = "train-aff"
RADIUS = 5  # PSA's training radius on the feature grid

# PSA's train_aff.py for the ImageNet backbones; tiny starts from the classifier's weights
# and uses AdamW (docs/results.md#train-aff)
_PSA = dict(pretrained="imagenet", optimizer="sgd", epochs=8, batch_size=8, lr=0.1,
            weight_decay=5e-4, crop_size=448, resize_long=(448, 768))
PRESETS: dict[str, dict] = {
    "psa": _PSA,
    "irn": _PSA,
    "tiny": dict(pretrained="cls", optimizer="adamw", epochs=8, batch_size=8, lr=3e-3,
                 weight_decay=5e-4, crop_size=128, resize_long=(96, 288), freeze_bn=False),
}


@dataclass(frozen=True, kw_only=True)
class TrainAffConfig(TrainingConfig):
    PRESETS: ClassVar[dict[str, dict]] = PRESETS
    pretrained: str | None = option(None, "Initial backbone weights; cls = the trained "
                                          "classifier's.", metavar="PATH|imagenet|none|cls",
                                    default_text="cls for tiny, imagenet otherwise")
    aff_labels: str = set_option(Layout.AFF_LABELS, "Affinity-label set to learn from")


def classifier_backbone(layout: Layout) -> str:
    path = layout.model(CLASSIFIER)
    if not path.exists():
        raise WsssError(f"--backbone not given and no classifier at {path} to take it from")
    return load_checkpoint(path)["meta"]["backbone"]


def run(cfg: TrainAffConfig) -> Path:
    """Train AffinityNet; returns ``WORKDIR/aff/model.pt``."""
    layout = Layout(cfg.workdir)
    if cfg.backbone is None:
        cfg = replace(cfg, backbone=classifier_backbone(layout))
    cfg = fill_from_preset(cfg, PRESETS)
    data = open_dataset(cfg.data)
    ids = data.ids(cfg.split)
    labels = layout.labels(cfg.aff_labels)
    missing = labels.missing(ids)
    if missing:
        raise WsssError(f"{labels.path(missing[0])}: affinity labels missing for "
                        f"{len(missing)} images (run make-aff-labels first)")
    inputs = Workdir(cfg.workdir).producer_hashes(
        entry_name("make-aff-labels", cfg.aff_labels, Layout.AFF_LABELS))
    with training_run(STAGE, cfg, AFFINITY, data, ids, inputs) as job:
        if job.finished_before:
            return job.model
        cfg.runtime.seed_everything()
        model = AffinityNet(cfg.initial_backbone())
        _check_crop(cfg.crop_size, model.stride)
        aug = AugmentConfig(crop=cfg.crop_size, resize_long=cfg.resize_long)
        dataset = AffinitySet(data, ids, labels.folder, aug, model.stride, RADIUS, cfg.runtime.seed)
        job.logger.info("%d images of split %s, backbone %s (%s)", len(ids), cfg.split,
                        cfg.backbone, cfg.pretrained)

        def step(net, batch, ctx):
            images, bg_pos, fg_pos, neg = batch
            return affinity_loss(pair_affinities(net(images), RADIUS), bg_pos, fg_pos, neg)

        loop = cfg.loop()
        meta = {"kind": AFFINITY, "backbone": cfg.backbone, "num_classes": data.num_classes}
        final = fit(model, param_groups(model.backbone, model.head, cfg.lr, loop.head_lr_mult),
                    dataset, step, loop, job.model_dir, cfg.runtime, meta, job.logger)
        job.record.update(images=len(ids))
    return final


def _check_crop(crop: int, stride: int) -> None:
    if crop % stride:
        raise WsssError(f"--crop-size {crop} must be a multiple of the stride {stride}")
    if crop // stride < 2 * RADIUS - 1:  # the pairs' window must fit the grid
        raise WsssError(f"--crop-size {crop} is too small for the radius-{RADIUS} pairs: "
                        f"at least {(2 * RADIUS - 1) * stride}")
