"""Grad-CAM (Selvaraju et al. 2017) and Grad-CAM++ (Chattopadhay et al. 2018) readings of
any classifier: each class's logit differentiated with respect to the last feature map,
the map's channels weighted by those gradients (``ops.gradcam``).

On a network whose logits are a linear layer after global average pooling (the plain
CAM's) the gradient is the class's weight vector over h*w at every position, so Grad-CAM
is the CAM divided by h*w. Every map is multiplied by its h*w, so that dump-cams's sum
over scales weighs them as it weighs CAMs (a smaller scale would otherwise count more);
at one scale this changes nothing once the maps are normalised. Grad-CAM++ weighs the
channels differently.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from wsss_cli import ops
from wsss_cli.cam_methods import Defaults


@dataclass(frozen=True)
class GradCam(Defaults):
    plus_plus: bool

    def cams(self, model: nn.Module, x: Tensor) -> Tensor:
        """``[B, C, h, w]`` maps of every class of a normalised batch ``x`` ``[B, 3, H, W]``.

        ``model`` has ``features(x)`` (the last feature map) and ``classify(features)``
        (the logits); only ``classify`` is differentiated, once per class.
        """
        with torch.no_grad():
            features = model.features(x).float()
        features.requires_grad_(True)
        maps = []
        with torch.enable_grad():
            logits = model.classify(features)
            for c in range(logits.shape[1]):
                # samples are independent (eval mode): the sum's gradient is each one's own
                (grad,) = torch.autograd.grad(logits[:, c].sum(), features,
                                              retain_graph=c + 1 < logits.shape[1])
                maps.append(ops.gradcam(features.detach(), grad, plus_plus=self.plus_plus))
        return torch.stack(maps, dim=1) * features[0, 0].numel()
