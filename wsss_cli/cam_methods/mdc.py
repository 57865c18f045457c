"""Multi-dilated convolution, MDC (Wei et al. CVPR 2018): CAM heads at dilation rates 1,
3, 6, 9 on the same features, each trained with the classification loss; the map is
``H = H_1 + mean(H_3, H_6, H_9)`` (``models.mdc``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from wsss_cli.cam_methods import Defaults
from wsss_cli.models.backbones import Backbone
from wsss_cli.models.mdc import RATES, MdcNet


@dataclass(frozen=True)
class Mdc(Defaults):
    rates: tuple[int, ...] = RATES

    def configured(self, cfg: Any) -> Mdc:
        """With train-cls's ``mdc_rates``."""
        rates = getattr(cfg, "mdc_rates", None)
        return Mdc(tuple(rates)) if rates else self

    def recorded(self) -> dict[str, Any]:
        return {"mdc_rates": list(self.rates)}

    def build(self, backbone: Backbone, num_classes: int, dropout: float) -> nn.Module:
        return MdcNet(backbone, num_classes, dropout, self.rates)

    def loss(self, net: nn.Module, batch: list[Tensor], ctx: Any) -> Tensor:
        """The sum over rates of the multi-label soft margin loss of each rate's logits."""
        images, labels = batch
        logits = net(images).float()
        return sum(F.multilabel_soft_margin_loss(rate, labels) for rate in logits)

    def cams(self, model: nn.Module, x: Tensor) -> Tensor:
        return model.cams(x)


MDC = Mdc()
