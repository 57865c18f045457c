"""The plain CAM (Zhou et al. 2016; PSA, IRN): a bias-free linear classifier after global
average pooling, applied at every position of the feature map."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from wsss_cli.cam_methods import Defaults
from wsss_cli.models.backbones import Backbone
from wsss_cli.models.classifier import CamNet


class PlainCam(Defaults):
    def build(self, backbone: Backbone, num_classes: int, dropout: float) -> nn.Module:
        return CamNet(backbone, num_classes, dropout)

    def loss(self, net: nn.Module, batch: list[Tensor], ctx: Any) -> Tensor:
        """Multi-label soft margin over the image's classes."""
        images, labels = batch
        return F.multilabel_soft_margin_loss(net(images).float(), labels)

    def cams(self, model: nn.Module, x: Tensor) -> Tensor:
        return model.cams(x)


CAM = PlainCam()
