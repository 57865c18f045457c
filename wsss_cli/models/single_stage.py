"""The single-stage network of Araslanov & Roth (CVPR 2020).

Backbone -> ASPP on the deepest map -> joined with a projection of the shallow (stride-4)
map -> the deep branch. The shallow map, modulated by global cues of the deep branch
(AdaIN-style scale and shift from its spatial maximum), is the shallow branch. The two
are mixed by ``ops.stochastic_gate`` and two 3x3 convs give one mask logit per
foreground class; a constant background logit of 1 is put in front. ``ops.ngwp`` turns
the logits into class scores for the image-level loss.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wsss_cli import ops
from wsss_cli.models.backbones import Backbone
from wsss_cli.options import default_of


@dataclass(frozen=True)
class HeadConfig:
    """What rebuilding the new layers needs besides the backbone and the class count.

    The reference uses 256 channels, a 48-channel shallow projection and ASPP rates
    (1, 12, 24, 36) for every backbone. The ``tiny`` backbone sees 64-160 px images (a
    16x16 grid at stride 8), where such rates would only read padding, and a 256-wide
    decoder at stride 4 would cost several times the backbone itself.
    """

    width: int = 256
    skip: int = 48
    aspp_rates: tuple[int, ...] = (1, 12, 24, 36)
    psi: float = default_of(ops.stochastic_gate, "psi")
    focal_p: float = float(default_of(ops.ngwp, "focal_p"))
    focal_lambda: float = default_of(ops.ngwp, "focal_lambda")

    def to_meta(self) -> dict[str, Any]:
        return {**asdict(self), "aspp_rates": list(self.aspp_rates)}

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> HeadConfig:
        return cls(**{**meta, "aspp_rates": tuple(meta["aspp_rates"])})


# a narrow head for toy-sized images (docs/results.md#train-single-stage)
TINY_HEAD = dict(width=48, skip=16, aspp_rates=(1, 2, 4, 6))


def head_defaults(backbone: str) -> dict[str, Any]:
    """The architecture of the new layers for ``backbone`` (see :class:`HeadConfig`)."""
    return dict(TINY_HEAD) if backbone == "tiny" else {}


class SingleStageOutput(NamedTuple):
    """``scores`` ``[B, C]`` (nGWP + focal penalty), ``masks`` = softmax of ``logits``,
    both ``[B, 1 + C, H/4, W/4]``, channel 0 the background."""

    scores: Tensor
    masks: Tensor
    logits: Tensor


def _conv_bn_relu(cin: int, cout: int, kernel: int = 1, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (kernel // 2)
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ASPP(nn.Module):
    """Parallel dilated convs plus image pooling, fused by a 1x1 conv (DeepLab v3).

    ``[B, cin, h, w]`` -> ``[B, width, h, w]``.
    """

    def __init__(self, cin: int, width: int, rates: tuple[int, ...]):
        super().__init__()
        self.branches = nn.ModuleList(
            _conv_bn_relu(cin, width, 1 if r == 1 else 3, r) for r in rates
        )
        self.pool = _conv_bn_relu(cin, width)
        self.fuse = nn.Sequential(_conv_bn_relu(width * (len(rates) + 1), width), nn.Dropout(0.5))

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.pool(x.mean(dim=(2, 3), keepdim=True)).expand(-1, -1, *x.shape[-2:])
        return self.fuse(torch.cat([b(x) for b in self.branches] + [pooled], dim=1))


class GlobalCueInjection(nn.Module):
    """The shallow branch: shallow features scaled and shifted per channel by the
    spatial maximum of a projection of the deep features, so that local evidence is
    read in the light of what the whole image contains.

    ``shallow`` ``[B, cin, h, w]``, ``deep`` ``[B, width, h, w]`` -> ``[B, width, h, w]``.
    """

    def __init__(self, cin: int, width: int):
        super().__init__()
        self.width = width
        self.cues = _conv_bn_relu(width, 2 * width)
        self.project = nn.Sequential(nn.Conv2d(cin, width, 1, bias=False),
                                     nn.BatchNorm2d(width, affine=False))
        self.out = _conv_bn_relu(width, width)

    def forward(self, shallow: Tensor, deep: Tensor) -> Tensor:
        cues = self.cues(deep).amax(dim=(2, 3))
        gamma, beta = cues[:, : self.width, None, None], cues[:, self.width :, None, None]
        return self.out(F.relu(self.project(shallow) * (1 + gamma) + beta))


class SingleStageNet(nn.Module):
    """Mask logits and class scores for ``num_classes`` foreground classes."""

    def __init__(self, backbone: Backbone, num_classes: int, head: HeadConfig | None = None):
        super().__init__()
        self.backbone = backbone
        head = head or HeadConfig()
        self.config = head
        shallow, deep = backbone.stage_channels[0], backbone.stage_channels[-1]
        self.aspp = ASPP(deep, head.width, head.aspp_rates)
        self.skip = _conv_bn_relu(shallow, head.skip)
        self.merge = _conv_bn_relu(head.width + head.skip, head.width, 3)
        self.gci = GlobalCueInjection(shallow, head.width)
        self.classifier = nn.Sequential(
            _conv_bn_relu(head.width, head.width, 3), nn.Dropout(0.5),
            _conv_bn_relu(head.width, head.width, 3), nn.Dropout(0.1),
            nn.Conv2d(head.width, num_classes, 1),
        )
        self._init_new_layers()

    def _init_new_layers(self) -> None:
        for m in self.head.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d) and m.affine:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def head(self) -> nn.Module:
        """The new layers (10x learning rate over a pretrained backbone)."""
        return nn.ModuleList([self.aspp, self.skip, self.merge, self.gci, self.classifier])

    def mask_logits(self, x: Tensor, gate_training: bool) -> Tensor:
        """``x`` ``[B, 3, H, W]`` -> logits ``[B, 1 + C, H/4, W/4]`` (float32), channel 0
        the constant background 1. ``gate_training``: the gate's random (training) or
        deterministic (inference) mix."""
        maps = self.backbone(x)
        shallow = maps[0]
        deep = self.aspp(maps[-1])
        deep = F.interpolate(deep, size=shallow.shape[-2:], mode="bilinear", align_corners=True)
        deep = self.merge(torch.cat([deep, self.skip(shallow)], dim=1))
        mixed = ops.stochastic_gate(deep, self.gci(shallow, deep), self.config.psi, gate_training)
        fg = self.classifier(mixed).float()
        return torch.cat([torch.ones_like(fg[:, :1]), fg], dim=1)

    def forward(self, x: Tensor) -> SingleStageOutput:
        """``x`` ``[B, 3, H, W]`` -> :class:`SingleStageOutput` (the gate follows
        ``self.training``)."""
        logits = self.mask_logits(x, self.training)
        scores, masks = ops.ngwp(logits, self.config.focal_p, self.config.focal_lambda)
        return SingleStageOutput(scores, masks, logits)

    def segment(self, x: Tensor) -> Tensor:
        """``x`` ``[B, 3, H, W]`` -> class logits ``[B, 1 + C, H/4, W/4]``, background first.

        One pass with the gate's inference mix, ``(1 - psi) deep + psi shallow``; call it on
        a model in eval mode (BatchNorm statistics, no dropout). Softmax gives the masks.
        """
        return self.mask_logits(x, gate_training=False)
