"""SEAM (Wang et al. CVPR 2020): CAMs that must agree under rescaling, refined by a pixel
correlation module. Training: the image and its copy rescaled by ``scale`` pass through one
network; loss = classification + min-pooling of the refined maps + equivariant
regularisation (ER) + equivariant cross regularisation (ECR), ``ops.seam_losses``.
Inference: the refined maps, summed over scales and flips, min-max normalised.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from wsss_cli import ops
from wsss_cli.cam_methods import Defaults
from wsss_cli.models.backbones import Backbone
from wsss_cli.models.seam import SeamNet
from wsss_cli.options import default_of

# train_SEAM.py (its ResNet-38 recipe, used for every ImageNet backbone), and for tiny the
# plain CAM's CPU recipe with a milder second view: at 0.3 a 128 px crop's is a 4 x 4 grid
# (docs/results.md#seam)
_SEAM = dict(pretrained="imagenet", optimizer="sgd", epochs=8, batch_size=8, lr=0.01,
             weight_decay=5e-4, crop_size=448, resize_long=(448, 768), dropout=0.5,
             color_jitter=0.3, seam_scale=default_of(ops.seam_losses, "scale"))
PRESETS: dict[str, dict[str, Any]] = {
    "psa": _SEAM,
    "irn": _SEAM,
    "tiny": dict(pretrained="none", optimizer="adamw", epochs=24, batch_size=16, lr=2e-3,
                 weight_decay=5e-4, crop_size=128, resize_long=(96, 160), dropout=0.0,
                 color_jitter=0.0, seam_scale=0.7),
}


# SEAM's infer_SEAM.py (the PCM's maps) and its affinity and walk settings for its
# ResNet-38 CAMs where they differ from PSA's; tiny reads the CAM head (a PCM learnt from
# scratch in a CPU budget blurs, docs/results.md#seam) and keeps its own walk
_SEAM_DOWNSTREAM = {"dump-cams": dict(seam_maps="refined"),
                    "make-aff-labels": dict(alpha_low=4.0, alpha_high=24.0),
                    "random-walk": dict(alpha=6.0, logt=6)}
DOWNSTREAM = {"psa": _SEAM_DOWNSTREAM, "irn": _SEAM_DOWNSTREAM,
              "tiny": {"dump-cams": dict(seam_maps="cam")}}
MAPS = ("refined", "cam")


@dataclass(frozen=True)
class Seam(Defaults):
    scale: float = default_of(ops.seam_losses, "scale")
    maps: str = "refined"
    presets: dict[str, dict[str, Any]] | None = None
    downstream: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def configured(self, cfg: Any) -> Seam:
        """With train-cls's ``seam_scale`` or dump-cams's ``seam_maps``."""
        return replace(self, scale=getattr(cfg, "seam_scale", None) or self.scale,
                       maps=getattr(cfg, "seam_maps", None) or self.maps)

    def build(self, backbone: Backbone, num_classes: int, dropout: float) -> nn.Module:
        return SeamNet(backbone, num_classes, dropout)

    def loss(self, net: nn.Module, batch: list[Tensor], ctx: Any) -> Tensor:
        """cls + min-pooling + ER + ECR of the image and its copy rescaled by ``scale``."""
        images, labels = batch
        small = F.interpolate(images, scale_factor=self.scale, mode="bilinear", align_corners=True)
        cam1, refined1 = net(images)
        cam2, refined2 = net(small)
        cls, er, ecr = ops.seam_losses(cam1.float(), refined1.float(), cam2.float(),
                                       refined2.float(), labels, scale=self.scale)
        return cls + er + ecr

    def cams(self, model: nn.Module, x: Tensor) -> Tensor:
        """The foreground maps ``[B, C, H, W]``: the PCM's (``refined``) or the CAM head's."""
        cams, refined = model(x)
        return refined[:, 1:] if self.maps == "refined" else F.relu(cams[:, 1:])

    def normalize(self, total: Tensor) -> Tensor:
        """SEAM's ``infer_SEAM.py``: clipped at 0, ``(s - min - 1e-5) / (max - min + 1e-5)``
        per class, values at the minimum set to 0."""
        total = total.clamp(min=0)
        low = total.amin(dim=(1, 2), keepdim=True)
        high = total.amax(dim=(1, 2), keepdim=True)
        return ((total - low - 1e-5) / (high - low + 1e-5)).clamp(min=0)


SEAM = Seam(presets=PRESETS, downstream=DOWNSTREAM)
