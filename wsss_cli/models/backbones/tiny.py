"""``tiny``: a small dilated ResNet that trains from scratch on a CPU in minutes."""

from __future__ import annotations

from torch import Tensor, nn

from .base import Backbone, init_conv_bn


class BasicBlock(nn.Module):
    """Two 3x3 convs plus a shortcut (post-activation, as in ResNet-18).

    ``[B, cin, H, W]`` -> ``[B, cout, H / stride, W / stride]``.
    """

    def __init__(
        self, cin: int, cout: int, stride: int = 1, dilation: int = 1, first_dilation: int = 1
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(
            cin, cout, 3, stride, padding=first_dilation, dilation=first_dilation, bias=False
        )
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (dilated) -> 1x1 expand, plus a shortcut.

    ``[B, cin, H, W]`` -> ``[B, cout, H, W]``. The 3x3 runs on ``cout // 4`` channels, which
    keeps the wide last stage cheap: a basic block there would cost 4x the compute of the
    whole rest of the network.
    """

    def __init__(self, cin: int, cout: int, dilation: int = 1) -> None:
        super().__init__()
        mid = cout // 4
        self.conv1 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class TinyBackbone(Backbone):
    """Stem (3x3 conv, stride 2) + four residual stages, about 0.8M parameters.

    ============  ==============================  ========  ======  ========
    stage         blocks                          channels  stride  dilation
    ============  ==============================  ========  ======  ========
    layer1        1 basic (stride 2)              32        4       1
    layer2        1 basic (stride 2)              64        8       1
    layer3        2 basic                         128       8       2
    layer4        2 bottleneck (3x3 on 64 ch)     256       8       4
    ============  ==============================  ========  ======  ========

    Stages 3-4 dilate instead of striding so class activation maps come out at stride 8
    (16x16 for a 128 px image) while the receptive field still covers the whole image.
    Output: ``[B, 32, H/4, W/4]``, ``[B, 64, H/8, W/8]``, ``[B, 128, H/8, W/8]``,
    ``[B, 256, H/8, W/8]``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.stage_channels = (32, 64, 128, 256)
        self.stage_strides = (4, 8, 8, 8)
        self.stem = nn.Sequential(
            nn.Conv2d(3, 32, 3, 2, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
        )
        self.layer1 = nn.Sequential(BasicBlock(32, 32, stride=2))
        self.layer2 = nn.Sequential(BasicBlock(32, 64, stride=2))
        # The first 3x3 of a newly dilated stage keeps the previous dilation (as PSA's b5
        # does): a sudden jump in dilation leaves grid holes in the receptive field.
        self.layer3 = nn.Sequential(
            BasicBlock(64, 128, dilation=2, first_dilation=1),
            BasicBlock(128, 128, dilation=2, first_dilation=2),
        )
        self.layer4 = nn.Sequential(Bottleneck(128, 256, dilation=2), Bottleneck(256, 256, 4))
        self._init_weights()

    def _init_weights(self) -> None:
        init_conv_bn(self)
        # Every residual branch starts at zero, so each block starts as (nearly) the
        # identity: stabler and faster training from scratch.
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)
            elif isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)

    def forward(self, x: Tensor) -> list[Tensor]:
        """``[B, 3, H, W]`` -> maps at strides 4, 8, 8, 8 (see the class docstring)."""
        x = self.stem(x)
        f1 = self.layer1(x)
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        f4 = self.layer4(f3)
        return [f1, f2, f3, f4]
