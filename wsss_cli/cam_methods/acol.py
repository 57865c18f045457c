"""ACoL, adversarial complementary learning (Zhang et al. CVPR 2018; xiaomengyc/ACoL): two
heads on the same features; the features where head A's map of an image's class is at
least ``threshold`` (min-max normalised) are erased before head B. Loss: A's + B's
classification losses; the map: max of A's and B's normalised maps (``models.acol``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from wsss_cli.cam_methods import Defaults
from wsss_cli.models.acol import AcolNet
from wsss_cli.models.backbones import BACKBONES, Backbone

THRESHOLD = 0.6  # ACoL's erasing threshold
# the heads' hidden width: ACoL's 1024, half the features' channels for our CPU backbone
WIDTHS = {"tiny": 128}
TINY_LR = 1e-3


@dataclass(frozen=True)
class Acol(Defaults):
    threshold: float = THRESHOLD
    width: int = 1024
    head_lr_mult: float | None = None

    def configured(self, cfg: Any) -> Acol:
        """With train-cls's ``acol_threshold``, the heads' width from its backbone (or
        both from a checkpoint's recorded options); trained from scratch, the heads learn
        at the base rate (three layers at 10x AdamW's rate diverge in the first epoch)."""
        width = getattr(cfg, "acol_width", None)
        backbone = getattr(cfg, "backbone", None)
        if width is None and backbone is not None:
            width = WIDTHS.get(BACKBONES.get(backbone).family, 1024)
        threshold = getattr(cfg, "acol_threshold", None)
        scratch = getattr(cfg, "pretrained", None) == "none"
        return Acol(self.threshold if threshold is None else threshold, width or self.width,
                    1.0 if scratch else None)

    @property
    def presets(self) -> dict[str, dict[str, Any]]:
        """train-cls's, with tiny's rate halved: its heads learn at the base rate, and
        train-cls's 2e-3 makes their logits spike in the first epoch (docs/results.md#compare)."""
        from wsss_cli.stages.train_cls import PRESETS

        return {**PRESETS, "tiny": {**PRESETS["tiny"], "lr": TINY_LR}}

    def recorded(self) -> dict[str, Any]:
        return {"acol_threshold": self.threshold, "acol_width": self.width}

    def build(self, backbone: Backbone, num_classes: int, dropout: float) -> nn.Module:
        return AcolNet(backbone, num_classes, dropout, self.threshold, self.width)

    def loss(self, net: nn.Module, batch: list[Tensor], ctx: Any) -> Tensor:
        """Head A's + head B's multi-label soft margin; B sees the features A's maps of the
        image's classes leave."""
        images, labels = batch
        logits_a, logits_b = net(images, labels)
        return (F.multilabel_soft_margin_loss(logits_a.float(), labels)
                + F.multilabel_soft_margin_loss(logits_b.float(), labels))

    def cams(self, model: nn.Module, x: Tensor) -> Tensor:
        return model.cams(x)


ACOL = Acol()
