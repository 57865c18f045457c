"""SEAM's network (Wang et al. CVPR 2020): a CAM head with a background channel and the
pixel correlation module (PCM) that refines the CAMs with feature-space affinities."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wsss_cli import ops
from wsss_cli.models.backbones import Backbone

# SEAM's f8_3 / f8_4 widths and f9's: the PCM's features
MID_WIDTHS = (64, 128)


class SeamNet(nn.Module):
    """CAMs ``[B, 1 + C, H, W]`` (channel 0: background) and their PCM refinement."""

    def __init__(self, backbone: Backbone, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        channels = backbone.stage_channels
        self.classifier = nn.Conv2d(channels[-1], 1 + num_classes, 1, bias=False)
        self.project = nn.ModuleList(nn.Conv2d(c, w, 1, bias=False)
                                     for c, w in zip(channels[-3:-1], MID_WIDTHS, strict=True))
        self.pcm_features = nn.Conv2d(3 + sum(MID_WIDTHS), sum(MID_WIDTHS), 1, bias=False)
        # SEAM's initialisation of its new layers
        nn.init.xavier_uniform_(self.classifier.weight)
        for conv in self.project:
            nn.init.kaiming_normal_(conv.weight)
        nn.init.xavier_uniform_(self.pcm_features.weight, gain=4)

    @property
    def head(self) -> nn.Module:
        """The layers trained from scratch (10x learning rate)."""
        return nn.ModuleList([self.classifier, self.project, self.pcm_features])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` ``[B, 3, H, W]`` -> (CAMs, PCM-refined CAMs), each ``[B, 1 + C, H, W]``."""
        stages = self.backbone(x)
        cams = self.classifier(self.dropout(stages[-1]))
        grid = cams.shape[-2:]
        # the PCM learns from detached maps: its loss trains only its own projections
        mids = [F.relu(conv(_resized(s.detach(), grid))) for conv, s in zip(self.project, stages[-3:-1],
                                                                            strict=True)]
        image = F.interpolate(x, grid, mode="bilinear", align_corners=True)
        features = self.pcm_features(torch.cat([image, *mids], dim=1))
        refined = ops.pcm(ops.seam_normalize(cams), features)
        size = x.shape[-2:]
        return (F.interpolate(cams, size, mode="bilinear", align_corners=True),
                F.interpolate(refined, size, mode="bilinear", align_corners=True))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``[B, 3, H, W]`` -> the last feature map ``[B, D, H/s, W/s]``."""
        return self.backbone(x)[-1]

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """The last feature map -> foreground logits ``[B, C]``: the CAMs' spatial mean."""
        return self.classifier(self.dropout(features)).mean(dim=(2, 3))[:, 1:]


def _resized(x: torch.Tensor, grid: torch.Size) -> torch.Tensor:
    """A middle stage on the CAMs' grid (deeper backbones halve it once more)."""
    if x.shape[-2:] == grid:
        return x
    return F.interpolate(x, grid, mode="bilinear", align_corners=False)
