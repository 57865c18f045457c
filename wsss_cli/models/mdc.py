"""The multi-dilated CAM head (MDC, Wei et al. CVPR 2018): class maps from 3x3
convolutions at several dilation rates on the same features, each a classifier of its own;
larger rates spread the response over more of the object."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wsss_cli.models.backbones import Backbone

RATES = (1, 3, 6, 9)


class MdcNet(nn.Module):
    """One bias-free 3x3 class-map convolution per dilation rate over ``num_classes``
    foreground classes; the first rate's map is the base, the others' mean is added."""

    def __init__(self, backbone: Backbone, num_classes: int, dropout: float = 0.0,
                 rates: tuple[int, ...] = RATES):
        super().__init__()
        self.backbone, self.rates = backbone, tuple(rates)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        channels = backbone.stage_channels[-1]
        self.branches = nn.ModuleList(nn.Conv2d(channels, num_classes, 3, padding=r, dilation=r,
                                                bias=False) for r in self.rates)

    @property
    def head(self) -> nn.Module:
        """The layers trained from scratch (10x learning rate)."""
        return self.branches

    def maps(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``[B, 3, H, W]`` -> every rate's class maps ``[R, B, C, H/s, W/s]``."""
        features = self.dropout(self.backbone(x)[-1])
        return torch.stack([branch(features) for branch in self.branches])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits of every rate ``[R, B, C]`` (global average pooling)."""
        return self.maps(x).mean(dim=(3, 4))

    def cams(self, x: torch.Tensor) -> torch.Tensor:
        """``H = H_1 + mean(H_r, r > 1)`` of the rectified maps, ``[B, C, H/s, W/s]``."""
        maps = F.relu(self.maps(x))
        return maps[0] + maps[1:].mean(0) if len(maps) > 1 else maps[0]
