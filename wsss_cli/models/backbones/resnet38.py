"""``resnet38``: the wide ResNet-38 ("resnet38d") of PSA, with PSA's parameter names.

The names match PSA's ``network/resnet38d.py`` so that its converted ImageNet weights
(from the MXNet ``ilsvrc-cls_rna-a1_cls1000_ep-0001`` params) and its trained classifier
checkpoints load as they are.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .base import Backbone, init_conv_bn


class PreActBlock(nn.Module):
    """Pre-activation block of two 3x3 convs (PSA's ``ResBlock``).

    ``[B, cin, H, W]`` -> ``([B, cout, H / stride, W / stride], [B, cin, H, W])``: the block
    output and ``relu(bn_branch2a(x))``, the activated input, which PSA taps as a feature.
    """

    def __init__(
        self,
        cin: int,
        mid: int,
        cout: int,
        stride: int = 1,
        dilation: int = 1,
        first_dilation: int | None = None,
    ) -> None:
        super().__init__()
        first = dilation if first_dilation is None else first_dilation
        self.same_shape = cin == cout and stride == 1
        self.bn_branch2a = nn.BatchNorm2d(cin)
        self.conv_branch2a = nn.Conv2d(
            cin, mid, 3, stride, padding=first, dilation=first, bias=False
        )
        self.bn_branch2b1 = nn.BatchNorm2d(mid)
        self.conv_branch2b1 = nn.Conv2d(
            mid, cout, 3, padding=dilation, dilation=dilation, bias=False
        )
        if not self.same_shape:
            self.conv_branch1 = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        act = F.relu(self.bn_branch2a(x))
        # Identity shortcut takes the raw input; a projection takes the activated one.
        shortcut = x if self.same_shape else self.conv_branch1(act)
        branch = self.conv_branch2a(act)
        branch = self.conv_branch2b1(F.relu(self.bn_branch2b1(branch)))
        return shortcut + branch, act


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck 1x1 -> 3x3 -> 1x1 with dropout (PSA's ``ResBlock_bot``).

    ``[B, cin, H, W]`` -> ``([B, cout, H, W], [B, cin, H, W])`` as :class:`PreActBlock`;
    the inner widths are ``cout // 4`` and ``cout // 2``.
    """

    def __init__(self, cin: int, cout: int, dilation: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.same_shape = cin == cout
        self.bn_branch2a = nn.BatchNorm2d(cin)
        self.conv_branch2a = nn.Conv2d(cin, cout // 4, 1, bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(cout // 4)
        self.dropout_2b1 = nn.Dropout2d(dropout)
        self.conv_branch2b1 = nn.Conv2d(
            cout // 4, cout // 2, 3, padding=dilation, dilation=dilation, bias=False
        )
        self.bn_branch2b2 = nn.BatchNorm2d(cout // 2)
        self.dropout_2b2 = nn.Dropout2d(dropout)
        self.conv_branch2b2 = nn.Conv2d(cout // 2, cout, 1, bias=False)
        if not self.same_shape:
            self.conv_branch1 = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        act = F.relu(self.bn_branch2a(x))
        shortcut = x if self.same_shape else self.conv_branch1(act)
        branch = self.conv_branch2a(act)
        branch = self.dropout_2b1(F.relu(self.bn_branch2b1(branch)))
        branch = self.conv_branch2b1(branch)
        branch = self.dropout_2b2(F.relu(self.bn_branch2b2(branch)))
        branch = self.conv_branch2b2(branch)
        return shortcut + branch, act


class ResNet38(Backbone):
    """PSA's ResNet-38 at output stride 8, about 104M parameters.

    ``conv1a`` (3x3, 64 ch, stride 1) is followed by blocks ``b2`` (128 ch, stride 2),
    ``b3`` (256, stride 4), ``b4`` (512, stride 8), then ``b5`` (1024, dilation 2, its first
    3x3 undilated), ``b6`` (bottleneck 2048, dilation 4, dropout 0.3), ``b7`` (bottleneck
    4096, dilation 4, dropout 0.5) and ``bn7``.

    Output (PSA's taps, plus a stride-4 map first):
    ``relu(b4.bn_branch2a(b3_2))`` ``[B, 256, H/4, W/4]``;
    PSA's conv4 ``relu(b5.bn_branch2a(b4_5))`` ``[B, 512, H/8, W/8]``;
    PSA's conv5 ``relu(b6.bn_branch2a(b5_2))`` ``[B, 1024, H/8, W/8]``;
    PSA's conv6 ``relu(bn7(b7))`` ``[B, 4096, H/8, W/8]``.

    PSA trains it with all BatchNorm frozen and ``conv1a`` (for the classifier also
    ``b2*``) fixed; freezing is left to the caller (see :func:`freeze_batchnorm`).
    """

    def __init__(self) -> None:
        super().__init__()
        self.stage_channels = (256, 512, 1024, 4096)
        self.stage_strides = (4, 8, 8, 8)
        self.conv1a = nn.Conv2d(3, 64, 3, padding=1, bias=False)

        self.b2 = PreActBlock(64, 128, 128, stride=2)
        self.b2_1 = PreActBlock(128, 128, 128)
        self.b2_2 = PreActBlock(128, 128, 128)

        self.b3 = PreActBlock(128, 256, 256, stride=2)
        self.b3_1 = PreActBlock(256, 256, 256)
        self.b3_2 = PreActBlock(256, 256, 256)

        self.b4 = PreActBlock(256, 512, 512, stride=2)
        self.b4_1 = PreActBlock(512, 512, 512)
        self.b4_2 = PreActBlock(512, 512, 512)
        self.b4_3 = PreActBlock(512, 512, 512)
        self.b4_4 = PreActBlock(512, 512, 512)
        self.b4_5 = PreActBlock(512, 512, 512)

        self.b5 = PreActBlock(512, 512, 1024, dilation=2, first_dilation=1)
        self.b5_1 = PreActBlock(1024, 512, 1024, dilation=2)
        self.b5_2 = PreActBlock(1024, 512, 1024, dilation=2)

        self.b6 = PreActBottleneck(1024, 2048, dilation=4, dropout=0.3)
        self.b7 = PreActBottleneck(2048, 4096, dilation=4, dropout=0.5)
        self.bn7 = nn.BatchNorm2d(4096)

        init_conv_bn(self)

    def forward(self, x: Tensor) -> list[Tensor]:
        """``[B, 3, H, W]`` -> maps at strides 4, 8, 8, 8 (see the class docstring)."""
        x = self.conv1a(x)
        for block in (self.b2, self.b2_1, self.b2_2, self.b3, self.b3_1, self.b3_2):
            x, _ = block(x)
        x, f_s4 = self.b4(x)
        for block in (self.b4_1, self.b4_2, self.b4_3, self.b4_4, self.b4_5):
            x, _ = block(x)
        x, conv4 = self.b5(x)
        x, _ = self.b5_1(x)
        x, _ = self.b5_2(x)
        x, conv5 = self.b6(x)
        x, _ = self.b7(x)
        conv6 = F.relu(self.bn7(x))
        return [f_s4, conv4, conv5, conv6]
