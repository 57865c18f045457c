"""ResNet-50/101 with torchvision's parameter names, at output stride 16 (as in IRN)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .base import Backbone, init_conv_bn


class Bottleneck(nn.Module):
    """torchvision's Bottleneck (stride on the 3x3, "ResNet v1.5"), same attribute names.

    ``[B, inplanes, H, W]`` -> ``[B, 4 * planes, H / stride, W / stride]``.
    """

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
    ) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(
            planes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False
        )
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(Backbone):
    """Bottleneck ResNet whose ``state_dict`` keys equal torchvision's (minus ``fc.*``).

    As in IRN, layer4 does not stride (its first block's 3x3 and its downsample 1x1 have
    stride 1) and is not dilated by default (``layer4_dilation=1``), so a torchvision
    ImageNet checkpoint loads unchanged. Output: ``[B, 256, H/4, W/4]``,
    ``[B, 512, H/8, W/8]``, ``[B, 1024, H/16, W/16]``, ``[B, 2048, H/16, W/16]``.
    """

    def __init__(self, layers: Sequence[int], layer4_dilation: int = 1) -> None:
        super().__init__()
        self.stage_channels = (256, 512, 1024, 2048)
        self.stage_strides = (4, 8, 16, 16)
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, padding=1)
        self.layer1 = self._make_layer(64, layers[0], stride=1)
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=1, dilation=layer4_dilation)
        init_conv_bn(self)

    def _make_layer(
        self, planes: int, blocks: int, stride: int, dilation: int = 1
    ) -> nn.Sequential:
        out = planes * Bottleneck.expansion
        downsample = None
        if stride != 1 or self.inplanes != out:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out)
            )
        layers = [Bottleneck(self.inplanes, planes, stride, dilation, downsample)]
        self.inplanes = out
        layers += [Bottleneck(out, planes, 1, dilation) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> list[Tensor]:
        """``[B, 3, H, W]`` -> the four layer outputs at strides 4, 8, 16, 16."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        f1 = self.layer1(x)
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        f4 = self.layer4(f3)
        return [f1, f2, f3, f4]


def resnet50(layer4_dilation: int = 1) -> ResNet:
    """ResNet-50 (3, 4, 6, 3 blocks), about 23.5M parameters."""
    return ResNet((3, 4, 6, 3), layer4_dilation)


def resnet101(layer4_dilation: int = 1) -> ResNet:
    """ResNet-101 (3, 4, 23, 3 blocks), about 42.5M parameters."""
    return ResNet((3, 4, 23, 3), layer4_dilation)
