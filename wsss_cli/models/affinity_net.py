"""AffinityNet (PSA §3.3): a feature map whose L1 distances predict semantic affinity.

The backbone's last three maps go through 1x1 convs to 64/128/256 channels + ELU, are
brought to the first one's grid (stride 8 for every backbone here) and concatenated,
then a 1x1 conv 448 -> 448 + ELU gives f. The affinity of pixels i and j is
``a_ij = exp(-mean_c |f_ci - f_cj|)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wsss_cli.models.backbones import Backbone
from wsss_cli.ops import affinity_offsets


class AffinityNet(nn.Module):
    def __init__(self, backbone: Backbone, widths: tuple[int, int, int] = (64, 128, 256)):
        super().__init__()
        self.backbone = backbone
        deep = backbone.stage_channels[-3:]
        self.reduce = nn.ModuleList(
            nn.Conv2d(c, w, 1, bias=False) for c, w in zip(deep, widths, strict=True)
        )
        self.fuse = nn.Conv2d(sum(widths), sum(widths), 1, bias=False)
        for conv in self.reduce:
            nn.init.kaiming_normal_(conv.weight)
        nn.init.xavier_uniform_(self.fuse.weight, gain=4)  # PSA's init: large initial distances

    @property
    def head(self) -> nn.Module:
        return nn.ModuleList([self.reduce, self.fuse])

    @property
    def stride(self) -> int:
        return self.backbone.stage_strides[-3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``[B, 3, H, W]`` -> features ``[B, 448, H/8, W/8]`` (float32)."""
        maps = self.backbone(x)[-3:]
        size = maps[0].shape[-2:]
        parts = []
        for conv, m in zip(self.reduce, maps, strict=True):
            y = F.elu(conv(m))
            if y.shape[-2:] != size:
                y = F.interpolate(y, size, mode="bilinear", align_corners=False)
            parts.append(y)
        return F.elu(self.fuse(torch.cat(parts, dim=1))).float()


def pair_affinities(features: torch.Tensor, radius: int = 5) -> torch.Tensor:
    """Affinities in the layout of ``ops.affinity_labels``.

    ``features`` ``[B, C, h, w]`` -> ``[B, P, (h-r+1) * (w-2r+2)]``: row k, column n is
    the pair from pixel ``(y, x + r - 1)`` of the "from" window to that pixel shifted by
    offset k of ``ops.affinity_offsets(radius)``.
    """
    _, _, h, w = features.shape
    r1 = radius - 1
    fh, fw = h - r1, w - 2 * r1
    source = features[:, :, :fh, r1 : r1 + fw]
    out = []
    for dy, dx in affinity_offsets(radius):
        target = features[:, :, dy : dy + fh, r1 + dx : r1 + dx + fw]
        out.append(torch.exp(-(source - target).abs().mean(dim=1)).flatten(1))
    return torch.stack(out, dim=1)


def affinity_loss(
    affinity: torch.Tensor, bg_pos: torch.Tensor, fg_pos: torch.Tensor, neg: torch.Tensor
) -> torch.Tensor:
    """PSA's balanced loss: 1/4 bg-positive + 1/4 fg-positive + 1/2 negative pairs.

    All inputs ``[B, P, n]``; labels are boolean. Each mean is over its own count.
    """

    def mean_over(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mask = mask.float()
        return (values * mask).sum() / (mask.sum() + 1e-5)

    bg = mean_over(-torch.log(affinity + 1e-5), bg_pos)
    fg = mean_over(-torch.log(affinity + 1e-5), fg_pos)
    negative = mean_over(-torch.log(1 + 1e-5 - affinity), neg)
    return bg / 4 + fg / 4 + negative / 2
