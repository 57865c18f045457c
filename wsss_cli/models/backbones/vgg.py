"""``vgg16``: PSA's dilated VGG-16 ("vgg16d") with PSA's parameter names.

The names (``conv1_1`` ... ``conv5_3``, ``fc6``, ``fc7``) match PSA's ``network/vgg16d.py``,
i.e. the Caffe "VGG16 20M" weights (fc6 a 3x3 conv to 1024 channels) after PSA's
conversion, and PSA's trained VGG classifier checkpoints.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Backbone

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
# Caffe VGG inputs: BGR, 0-255, minus these per-channel (B, G, R) means.
_CAFFE_MEAN_BGR = (104.008, 116.669, 122.675)


class VGG16(Backbone):
    """Dilated VGG-16 at output stride 8, about 20M parameters.

    pool1-3 stride 2; pool4/pool5 keep the resolution and conv5_* are dilated by 2; ``fc6``
    is a 3x3 conv (1024 ch) with dilation ``fc6_dilation`` (PSA: 1 for its classifier, 4
    for its AffinityNet; the weights are the same), then dropout 0.5 and the 1x1 ``fc7``.

    The input is ImageNet-normalised RGB like every backbone's; ``forward`` converts it to
    the Caffe convention (BGR, 0-255, mean-subtracted) the original weights expect.
    Output: relu(conv3_3) ``[B, 256, H/4, W/4]``, relu(conv4_3) ``[B, 512, H/8, W/8]``,
    relu(conv5_3) ``[B, 512, H/8, W/8]``, relu(fc7) ``[B, 1024, H/8, W/8]``.
    """

    def __init__(self, fc6_dilation: int = 1) -> None:
        super().__init__()
        self.stage_channels = (256, 512, 512, 1024)
        self.stage_strides = (4, 8, 8, 8)
        self.conv1_1 = nn.Conv2d(3, 64, 3, padding=1)
        self.conv1_2 = nn.Conv2d(64, 64, 3, padding=1)
        self.conv2_1 = nn.Conv2d(64, 128, 3, padding=1)
        self.conv2_2 = nn.Conv2d(128, 128, 3, padding=1)
        self.conv3_1 = nn.Conv2d(128, 256, 3, padding=1)
        self.conv3_2 = nn.Conv2d(256, 256, 3, padding=1)
        self.conv3_3 = nn.Conv2d(256, 256, 3, padding=1)
        self.conv4_1 = nn.Conv2d(256, 512, 3, padding=1)
        self.conv4_2 = nn.Conv2d(512, 512, 3, padding=1)
        self.conv4_3 = nn.Conv2d(512, 512, 3, padding=1)
        self.conv5_1 = nn.Conv2d(512, 512, 3, padding=2, dilation=2)
        self.conv5_2 = nn.Conv2d(512, 512, 3, padding=2, dilation=2)
        self.conv5_3 = nn.Conv2d(512, 512, 3, padding=2, dilation=2)
        self.fc6 = nn.Conv2d(512, 1024, 3, padding=fc6_dilation, dilation=fc6_dilation)
        self.drop6 = nn.Dropout2d(0.5)
        self.fc7 = nn.Conv2d(1024, 1024, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        # Buffers (not saved) so the conversion follows the module's device and dtype.
        std = torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1) * 255.0
        mean = torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0
        caffe_mean = torch.tensor(_CAFFE_MEAN_BGR[::-1]).view(1, 3, 1, 1)  # in RGB order
        self.register_buffer("_in_scale", std, persistent=False)
        self.register_buffer("_in_shift", mean - caffe_mean, persistent=False)

    def forward(self, x: Tensor) -> list[Tensor]:
        """``[B, 3, H, W]`` -> maps at strides 4, 8, 8, 8 (see the class docstring)."""
        # ImageNet-normalised RGB -> 0-255 minus the Caffe mean, channels flipped to BGR.
        x = (x * self._in_scale + self._in_shift).flip(1)
        x = F.relu(self.conv1_2(F.relu(self.conv1_1(x))))
        x = F.max_pool2d(x, 3, 2, padding=1)
        x = F.relu(self.conv2_2(F.relu(self.conv2_1(x))))
        x = F.max_pool2d(x, 3, 2, padding=1)
        x = F.relu(self.conv3_1(x))
        x = F.relu(self.conv3_2(x))
        conv3 = F.relu(self.conv3_3(x))
        x = F.max_pool2d(conv3, 3, 2, padding=1)
        x = F.relu(self.conv4_1(x))
        x = F.relu(self.conv4_2(x))
        conv4 = F.relu(self.conv4_3(x))
        x = F.max_pool2d(conv4, 3, 1, padding=1)
        x = F.relu(self.conv5_1(x))
        x = F.relu(self.conv5_2(x))
        conv5 = F.relu(self.conv5_3(x))
        # PSA's pool5 (3x3, stride 1) is defined but unused in its forward: skipped here too.
        x = self.drop6(F.relu(self.fc6(conv5)))
        fc7 = F.relu(self.fc7(x))
        return [conv3, conv4, conv5, fc7]
