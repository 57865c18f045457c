"""IAL's networks: the pairwise network (a guidance network predicting the gates of a spatial
propagation network) and the region classifier of confident-region mining.

The pairwise network sees only the image: its gates are IAL's learnt affinity transform
``G``, applied to the unary network's class distribution by ``ops.spn_propagate``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wsss_cli import ops
from wsss_cli.models.backbones import Backbone

GUIDANCE_WIDTH = 64


class PairwiseNet(nn.Module):
    """Guidance network: the backbone's stride-4 map fused with its deepest map -> the gates
    ``[B, 4, 3, K, H/4, W/4]`` of the four scans, one per class channel."""

    def __init__(self, backbone: Backbone, num_classes: int, width: int = GUIDANCE_WIDTH):
        super().__init__()
        self.backbone, self.num_classes = backbone, num_classes
        shallow, deep = backbone.stage_channels[0], backbone.stage_channels[-1]
        self.fuse = nn.Sequential(_conv_bn(shallow + deep, width), _conv_bn(width, width))
        self.gates = nn.Conv2d(width, 12 * num_classes, 1)
        # zero gates: the untrained network passes the unary distribution through unchanged
        nn.init.zeros_(self.gates.weight)
        nn.init.zeros_(self.gates.bias)

    @property
    def head(self) -> nn.Module:
        """The layers trained from scratch (10x learning rate)."""
        return nn.ModuleList([self.fuse, self.gates])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``[B, 3, H, W]`` -> raw gates ``[B, 4, 3, K, H/4, W/4]``."""
        maps = self.backbone(x)
        shallow = maps[0]
        deep = F.interpolate(maps[-1], shallow.shape[-2:], mode="bilinear", align_corners=False)
        gates = self.gates(self.fuse(torch.cat([shallow, deep], dim=1)))
        b, _, h, w = gates.shape
        return gates.view(b, 4, 3, self.num_classes, h, w)

    def refine(self, x: torch.Tensor, unary: torch.Tensor) -> torch.Tensor:
        """IAL's E-step ``a_p = G a_u``: ``x`` ``[B, 3, H, W]``, ``unary`` ``[B, K, h, w]`` (any
        size, resized) -> propagated scores ``[B, K, H/4, W/4]`` (not normalised)."""
        gates = self(x)
        unary = F.interpolate(unary, gates.shape[-2:], mode="bilinear", align_corners=False)
        return ops.spn_propagate(unary, gates)


def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class RegionClassifier(nn.Sequential):
    """Fast R-CNN style region head: mask-pooled features ``[R, D]`` -> class logits ``[R, K]``."""

    def __init__(self, in_features: int, num_classes: int, width: int = 128):
        super().__init__(nn.Linear(in_features, width), nn.ReLU(inplace=True), nn.Dropout(0.5),
                         nn.Linear(width, num_classes))
