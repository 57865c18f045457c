"""Normalised global weighted pooling, focal mask penalty and pseudo ground truth (1-stage)."""

from __future__ import annotations

import torch
from torch import Tensor


def ngwp(logits: Tensor, focal_p: float = 3, focal_lambda: float = 0.01) -> tuple[Tensor, Tensor]:
    """Class scores of the 1-stage model from its mask logits.

    ``logits``: ``[B, 1 + C, H, W]``, channel 0 the background (any values). With
    ``m = softmax(logits, dim=1)``, per channel ``c``:
    ``ngwp_c = sum_ij m_cij logits_cij / (1 + sum_ij m_cij)`` and
    ``focal_c = (1 - mean_ij m_cij) ** focal_p * log(focal_lambda + mean_ij m_cij)``.
    Returns ``(scores, m)``: ``scores = (ngwp + focal)[:, 1:]`` ``[B, C]`` and the masks
    ``m`` ``[B, 1 + C, H, W]``.
    """
    if logits.ndim != 4 or logits.shape[1] < 2:
        raise ValueError(f"logits must be [B, 1 + C, H, W] with C >= 1, got {tuple(logits.shape)}")
    masks = torch.softmax(logits, dim=1)
    flat_masks = masks.flatten(2)
    mass = flat_masks.sum(-1)
    pooled = (flat_masks * logits.flatten(2)).sum(-1) / (1 + mass)
    mean = flat_masks.mean(-1)
    focal = (1 - mean).pow(focal_p) * torch.log(focal_lambda + mean)
    return (pooled + focal)[:, 1:], masks


def pseudo_gt(
    masks: Tensor, cutoff_top: float = 0.6, cutoff_bg: float = 0.7, cutoff_low: float = 0.2
) -> Tensor:
    """Binary pseudo ground truth from (cleaned) masks.

    ``masks``: ``[B, 1 + C, H, W]``, channel 0 the background, absent classes already
    zeroed. Per image and channel the threshold is
    ``max(cutoff_low, k * max_ij masks_c)`` with ``k = cutoff_bg`` for channel 0 and
    ``cutoff_top`` otherwise; a pixel is 1 in a channel where it exceeds the threshold,
    and all 0 where that holds in more than one channel (ambiguous). Returns a ``{0, 1}``
    tensor of the shape and dtype of ``masks``.
    """
    if masks.ndim != 4:
        raise ValueError(f"masks must be [B, 1 + C, H, W], got {tuple(masks.shape)}")
    flat = masks.flatten(2)
    factor = torch.full((masks.shape[1], 1), cutoff_top, dtype=masks.dtype, device=masks.device)
    factor[0] = cutoff_bg
    threshold = (flat.amax(-1, keepdim=True) * factor).clamp_min(cutoff_low)
    above = flat > threshold
    unique = above.sum(1, keepdim=True) <= 1
    return (above & unique).to(masks.dtype).view_as(masks)
