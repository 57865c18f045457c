"""DeepLab-style segmentation network: a backbone's deepest map -> ASPP or LargeFOV head.

``aspp`` is DeepLab v2's ASPP-S: parallel 3x3 convolutions at rates 6/12/18/24 straight
to the class scores, summed. ``largefov`` is DeepLab v1's head: fc6 (3x3, rate 12, 1024
channels) -> fc7 (1x1, 1024) -> fc8 (1x1, classes), with dropout 0.5 after fc6 and fc7.
The class layers start from N(0, 0.01) and zero bias, as DeepLab's released models do.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wsss_cli.models.backbones import Backbone

ASPP_RATES = (6, 12, 18, 24)
HEADS = ("aspp", "largefov")
# The ResNets' layer4 is undilated for the classifier (IRN); DeepLab's ASPP rates assume
# a dilated last stage, so it gets dilation 2 here (output stride 16, as DeepLab v3).
BACKBONE_OPTIONS: dict[str, dict[str, int]] = {"resnet50": {"layer4_dilation": 2},
                                              "resnet101": {"layer4_dilation": 2}}


def _class_layer(conv: nn.Conv2d) -> nn.Conv2d:
    nn.init.normal_(conv.weight, std=0.01)
    nn.init.zeros_(conv.bias)
    return conv


class Aspp(nn.Module):
    """``[B, C, h, w]`` -> ``[B, num_classes, h, w]``: the sum of one dilated 3x3 conv per rate."""

    def __init__(self, in_channels: int, num_classes: int, rates: tuple[int, ...] = ASPP_RATES):
        super().__init__()
        self.branches = nn.ModuleList(
            _class_layer(nn.Conv2d(in_channels, num_classes, 3, padding=r, dilation=r))
            for r in rates
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(branch(x) for branch in self.branches)


class LargeFov(nn.Sequential):
    """``[B, C, h, w]`` -> ``[B, num_classes, h, w]`` through fc6 (rate 12), fc7, fc8."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 1024, rate: int = 12):
        super().__init__(
            nn.Conv2d(in_channels, width, 3, padding=rate, dilation=rate),
            nn.ReLU(inplace=True),
            nn.Dropout2d(0.5),
            nn.Conv2d(width, width, 1),
            nn.ReLU(inplace=True),
            nn.Dropout2d(0.5),
            _class_layer(nn.Conv2d(width, num_classes, 1)),
        )


class ShallowRefine(nn.Module):
    """Sharpens stride-s class scores with the backbone's stride-4 map (after DeepLab v3+'s
    decoder): ``scores + f(cat[scores, proj(shallow)])`` at stride 4.

    On small images (the toy data: 128 px, a 16 x 16 grid at stride 8) DeepLab v2's
    stride-8 output cannot hold thin parts; see ``train_seg.PRESETS``.
    """

    def __init__(self, shallow_channels: int, num_classes: int, width: int = 64):
        super().__init__()
        self.project = nn.Sequential(nn.Conv2d(shallow_channels, 48, 1, bias=False),
                                     nn.BatchNorm2d(48), nn.ReLU(inplace=True))
        self.fuse = nn.Sequential(
            nn.Conv2d(48 + num_classes, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
            nn.ReLU(inplace=True), _class_layer(nn.Conv2d(width, num_classes, 1)))

    def forward(self, scores: torch.Tensor, shallow: torch.Tensor) -> torch.Tensor:
        scores = F.interpolate(scores, shallow.shape[-2:], mode="bilinear", align_corners=False)
        return scores + self.fuse(torch.cat([scores, self.project(shallow)], dim=1))


class SegNet(nn.Module):
    """Backbone + segmentation head over ``num_classes`` classes, background included."""

    def __init__(self, backbone: Backbone, num_classes: int, head: str = "aspp",
                 refine: bool = False):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        self.backbone = backbone
        channels = backbone.stage_channels[-1]
        self.classifier = Aspp(channels, num_classes) if head == "aspp" else LargeFov(channels, num_classes)
        self.refine = ShallowRefine(backbone.stage_channels[0], num_classes) if refine else None

    @property
    def head(self) -> nn.Module:
        """The layers trained from scratch (10x learning rate)."""
        return nn.ModuleList([self.classifier, self.refine or nn.Identity()])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``[B, 3, H, W]`` -> class logits ``[B, num_classes, H/s, W/s]`` (s = the output
        stride, or 4 with ``refine``)."""
        maps = self.backbone(x)
        scores = self.classifier(maps[-1])
        return scores if self.refine is None else self.refine(scores, maps[0])

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits for inference, ``[B, num_classes, H/s, W/s]`` (what ``predict`` calls)."""
        return self(x)
