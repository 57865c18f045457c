"""The CAM network: backbone -> dropout -> global average pooling -> 1x1 conv, no bias.

Because the classifier is linear and bias-free after pooling, applying its weights to
every position of the feature map gives the class activation maps,
``CAM_c = relu(w_c . f)`` (Zhou et al. 2016; PSA, IRN).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wsss_cli.models.backbones import Backbone


class CamNet(nn.Module):
    """Multi-label classifier over ``num_classes`` foreground classes."""

    def __init__(self, backbone: Backbone, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(backbone.stage_channels[-1], num_classes, 1, bias=False)

    @property
    def head(self) -> nn.Module:
        """The layers trained from scratch (10x learning rate)."""
        return self.classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``[B, 3, H, W]`` -> class logits ``[B, num_classes]``."""
        return self.classify(self.features(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``[B, 3, H, W]`` -> the last feature map ``[B, D, H/s, W/s]``."""
        return self.backbone(x)[-1]

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """The last feature map -> class logits ``[B, num_classes]`` (Grad-CAM differentiates
        this)."""
        pooled = self.dropout(features).mean(dim=(2, 3), keepdim=True)
        return self.classifier(pooled).flatten(1)

    def cams(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``[B, 3, H, W]`` -> CAMs ``[B, num_classes, H/s, W/s]`` (s = output stride)."""
        return F.relu(F.conv2d(self.features(x), self.classifier.weight))
