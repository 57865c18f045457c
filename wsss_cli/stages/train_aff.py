"""train-aff: AffinityNet on the affinity label maps (PSA §3.3).

Pairs within radius 5 on the stride-8 grid are labelled from ``aff_labels/<id>.png``
(same class: positive, split into background and foreground pairs; different classes:
negative; unsure pixels: no label) and the network learns ``a_ij = exp(-mean|f_i-f_j|)``
with PSA's balanced loss.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from wsss_cli.data.augment import AugmentConfig
from wsss_cli.data.dataset import VocDataset
from wsss_cli.data.loaders import AffinitySet
from wsss_cli.errors import WsssError
from wsss_cli.models.affinity_net import AffinityNet, affinity_loss, pair_affinities
from wsss_cli.models.backbones import build_backbone
from wsss_cli.stages.common import (
    TrainingConfig,
    fill_from_preset,
    finish_training,
    prepare_backbone,
    start_stage,
    upstream,
)
from wsss_cli.training import check_meta, fit, load_checkpoint, param_groups

RADIUS = 5  # PSA's training radius on the feature grid

# PSA's train_aff.py for the ImageNet backbones; tiny starts from the classifier's weights
# and uses AdamW: with SGD its affinities barely separate within a CPU budget (measured:
# loss 0.55 vs 0.30 after 8 epochs on ground-truth affinity labels of the toy data).
_PSA = dict(pretrained="imagenet", optimizer="sgd", epochs=8, batch_size=8, lr=0.1,
            weight_decay=5e-4, crop_size=448, resize_long=(448, 768))
PRESETS: dict[str, dict] = {
    **{name: _PSA for name in ("resnet38", "vgg16", "resnet50", "resnet101")},
    "tiny": dict(pretrained="cls", optimizer="adamw", epochs=8, batch_size=8, lr=3e-3,
                 weight_decay=5e-4, crop_size=128, resize_long=(96, 288), freeze_bn=False),
}


@dataclass(frozen=True)
class TrainAffConfig(TrainingConfig):
    """``backbone`` None = the classifier's."""


def classifier_backbone(workdir: Path) -> str:
    path = Path(workdir) / "cls" / "model.pt"
    if not path.exists():
        raise WsssError(f"--backbone not given and no classifier at {path} to take it from")
    return load_checkpoint(path)["meta"]["backbone"]


def load_affinity_net(path: Path) -> tuple[AffinityNet, str]:
    """The trained AffinityNet at ``path`` (eval mode) and its backbone's name."""
    ckpt = load_checkpoint(path)
    meta = ckpt.get("meta", {})
    check_meta(path, meta, {"kind": "aff"})
    model = AffinityNet(build_backbone(meta["backbone"]))
    model.load_state_dict(ckpt["model"])
    return model.eval(), meta["backbone"]


def run(cfg: TrainAffConfig) -> Path:
    """Train AffinityNet; returns ``WORKDIR/aff/model.pt``."""
    if cfg.backbone is None:
        cfg = replace(cfg, backbone=classifier_backbone(cfg.workdir))
    cfg = fill_from_preset(cfg, PRESETS)
    data = VocDataset(cfg.data)
    ids = data.ids(cfg.split)
    workdir = Path(cfg.workdir)
    label_dir, out_dir = workdir / "aff_labels", workdir / "aff"
    missing = [i for i in ids if not (label_dir / f"{i}.png").exists()]
    if missing:
        raise WsssError(f"{label_dir / missing[0]}.png: affinity labels missing for "
                        f"{len(missing)} images (run make-aff-labels first)")
    stage = start_stage("train-aff", cfg, out_dir, [out_dir / "model.pt", out_dir / "last.pt"],
                        cfg.overwrite, upstream(workdir, "make-aff-labels"))
    if stage.finished_before and (out_dir / "model.pt").exists():
        stage.logger.info("already trained with these settings: %s", out_dir / "model.pt")
        return out_dir / "model.pt"

    cfg.runtime.seed_everything()
    backbone = prepare_backbone(cfg.backbone, cfg.pretrained, cfg.freeze_bn, workdir)
    model = AffinityNet(backbone)
    if cfg.crop_size % model.stride:
        raise WsssError(f"--crop-size {cfg.crop_size} must be a multiple of the stride {model.stride}")
    if cfg.crop_size // model.stride < 2 * RADIUS - 1:  # the pairs' window must fit the grid
        raise WsssError(f"--crop-size {cfg.crop_size} is too small for the radius-{RADIUS} pairs: "
                        f"at least {(2 * RADIUS - 1) * model.stride}")
    aug = AugmentConfig(crop=cfg.crop_size, resize_long=cfg.resize_long)
    dataset = AffinitySet(data, ids, label_dir, aug, model.stride, RADIUS, cfg.runtime.seed)
    stage.logger.info("%d images of split %s, backbone %s (%s)", len(ids), cfg.split,
                      cfg.backbone, cfg.pretrained)

    def step(net, batch):
        images, bg_pos, fg_pos, neg = batch
        return affinity_loss(pair_affinities(net(images), RADIUS), bg_pos, fg_pos, neg)

    loop = cfg.loop()
    meta = {"kind": "aff", "backbone": cfg.backbone, "num_classes": data.num_classes}
    final = fit(model, param_groups(model.backbone, model.head, cfg.lr, loop.head_lr_mult),
                dataset, step, loop, out_dir, cfg.runtime, meta, stage.logger)
    finish_training(stage, images=len(ids))
    return final
