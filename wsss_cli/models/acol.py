"""ACoL's network (Zhang et al. CVPR 2018): two classifier heads on the same features;
what head A finds is erased from the features head B sees, so B must find the rest."""

from __future__ import annotations

import torch
from torch import nn

from wsss_cli import ops
from wsss_cli.models.backbones import Backbone


def _acol_head(channels: int, width: int, num_classes: int) -> nn.Sequential:
    """conv3x3 -> ReLU -> conv3x3 -> ReLU -> conv1x1 to the classes (ACoL's classifier),
    Xavier-uniform weights and zero biases as ACoL's code (PyTorch's default init lets
    the logits of a network trained from scratch blow up in the first steps)."""
    head = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(width, num_classes, 1))
    for layer in head:
        if isinstance(layer, nn.Conv2d):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
    return head


class AcolNet(nn.Module):
    """Heads A and B over ``num_classes`` foreground classes; ``threshold`` is the erasing
    threshold on A's min-max normalised maps, ``width`` the heads' hidden channels."""

    def __init__(self, backbone: Backbone, num_classes: int, dropout: float = 0.0,
                 threshold: float = 0.6, width: int = 1024):
        super().__init__()
        self.backbone, self.threshold = backbone, threshold
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        channels = backbone.stage_channels[-1]
        self.head_a = _acol_head(channels, width, num_classes)
        self.head_b = _acol_head(channels, width, num_classes)

    @property
    def head(self) -> nn.Module:
        """The layers trained from scratch (10x learning rate)."""
        return nn.ModuleList([self.head_a, self.head_b])

    def maps(self, x: torch.Tensor, classes: torch.Tensor | None = None,
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` ``[B, 3, H, W]`` -> the maps of heads A and B, each ``[B, C, H/s, W/s]``.

        ``classes`` ``[B, C]`` (> 0 = erase by that class's map): the labels in training;
        None at inference, where A's predicted classes erase (logit > 0, else the top one),
        as ACoL's code erases by its top prediction.
        """
        features = self.dropout(self.backbone(x)[-1])
        map_a = self.head_a(features)
        if classes is None:
            classes = ops.predicted_classes(map_a.mean(dim=(2, 3)))
        erased = ops.erase_by_maps(features, map_a, classes, self.threshold)
        return map_a, self.head_b(erased)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits of heads A and B, each ``[B, C]`` (global average pooling)."""
        map_a, map_b = self.maps(x, labels)
        return map_a.mean(dim=(2, 3)), map_b.mean(dim=(2, 3))

    def cams(self, x: torch.Tensor) -> torch.Tensor:
        """The fused maps ``[B, C, H/s, W/s]``: max of A's and B's, each min-max normalised."""
        map_a, map_b = self.maps(x)
        return torch.maximum(ops.minmax_normalize(map_a), ops.minmax_normalize(map_b))
