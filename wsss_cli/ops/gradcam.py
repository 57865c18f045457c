"""Grad-CAM (Selvaraju et al., ICCV 2017) and Grad-CAM++ (Chattopadhay et al., WACV 2018)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def gradcam(activations: Tensor, gradients: Tensor, plus_plus: bool = False) -> Tensor:
    """Class activation map of one class score from a layer's activations and gradients.

    ``activations``: ``[B, D, h, w]`` of the chosen layer; ``gradients``: ``[B, D, h, w]``, the
    gradient of one class score with respect to them. Channel weights: Grad-CAM
    ``w_d = mean_hw g_d``; Grad-CAM++ ``w_d = sum_hw relu(g_d) * a_d`` with
    ``a = g^2 / (2 g^2 + (sum_hw A_d) g^3 + 1e-6)`` (0 where ``g == 0``). Returns
    ``relu(sum_d w_d A_d)`` ``[B, h, w]`` in the dtype of ``activations``, neither normalised
    nor resized.

    Reference: github.com/jacobgil/pytorch-grad-cam ``grad_cam.py``, ``grad_cam_plusplus.py``
    ``get_cam_weights`` and ``base_cam.py`` ``get_cam_image``.
    """
    if activations.ndim != 4 or gradients.shape != activations.shape:
        raise ValueError(
            f"activations and gradients must both be [B, D, h, w], got shapes "
            f"{tuple(activations.shape)} and {tuple(gradients.shape)}"
        )
    g = gradients.to(activations.dtype)
    if plus_plus:
        g2 = g * g
        total = activations.sum((2, 3), keepdim=True)
        alpha = g2 / (2 * g2 + total * g2 * g + 1e-6)
        # relu(g) zeroes every other position anyway; masking alpha there too keeps a
        # non-finite alpha (vanishing denominator at a negative g) out of the weights
        weights = torch.where(g > 0, g * alpha, torch.zeros_like(g)).sum((2, 3))
    else:
        weights = g.mean((2, 3))
    return F.relu((weights[..., None, None] * activations).sum(1))
