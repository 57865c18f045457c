"""SEC (Kolesnikov & Lampert, ECCV 2016): seed, expand and constrain, trained from sparse seeds.

The whole image is resized to the square crop (no crop: the expand loss assumes every
labelled class is in view) and flipped at random, as SEC's input. On the network's output
grid: the seed loss on ``make-seeds``'s cues (nearest-neighbour downscaled), the expand
loss (global weighted rank pooling) on the image's labels, and the constrain loss against
the dense CRF of the image downscaled to that grid (bilinear), run on the detached
softmax with SEC's parameters, its kernel widths in grid pixels (SEC's scale factor 12).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wsss_cli import ops
from wsss_cli.data.augment import denormalize
from wsss_cli.data.dataset import LabelledDataset
from wsss_cli.data.loaders import SeedSet
from wsss_cli.workdir import Layout

MIN_PROB = 1e-4  # SEC adds it to the softmax and to the CRF's output, then renormalises
# SEC's CRF layer: 10 mean-field steps, widths of 3 and 80 px over its scale factor 12
CRF = dict(iters=10, gauss_sxy=3 / 12, gauss_compat=3, bilateral_sxy=80 / 12, bilateral_srgb=13,
           bilateral_compat=10)
# SEC's VOC schedule: batch 15, lr 1e-3 (last layer 10x), x0.1 every 2000 of 8000 steps
# (= 12 epochs of train_aug); DeepLab v1's LargeFOV head
_SEC = dict(pretrained="imagenet", optimizer="sgd", epochs=12, batch_size=15, lr=1e-3,
            weight_decay=5e-4, crop_size=321, head="largefov", refine=False, lr_phases=4)


def renormalized(probs: Tensor) -> Tensor:
    """``[B, K, h, w]`` distributions + ``MIN_PROB``, renormalised over K."""
    probs = probs + MIN_PROB
    return probs / probs.sum(dim=1, keepdim=True)


def seed_cues(seeds: Tensor, channels: int, size: tuple[int, int]) -> Tensor:
    """Seed maps int64 ``[B, S, S]`` (0 background, c class, 255 unknown) -> one-hot cues
    float ``[B, channels, h, w]`` on the output grid (nearest neighbour)."""
    small = F.interpolate(seeds[:, None].float(), size, mode="nearest")[:, 0].long()
    return (small[:, None] == torch.arange(channels, device=seeds.device)[None, :, None, None]).float()


def crf_probs(images: Tensor, probs: Tensor) -> Tensor:
    """The dense CRF of each normalised image ``[B, 3, S, S]``, downscaled to the grid of
    ``probs`` ``[B, K, h, w]``, over those probabilities; no gradient. On the GPU the torch
    backend runs there; on the CPU ``ops.dense_crf``'s auto backend."""
    small = F.interpolate(images.detach().float(), probs.shape[-2:], mode="bilinear",
                          align_corners=False)
    backend = "torch" if probs.is_cuda else "auto"
    out = [ops.dense_crf(denormalize(image.cpu().numpy()), p.cpu().numpy().astype(np.float32),
                         backend=backend, device=probs.device, **CRF)
           for image, p in zip(small, probs.detach().float(), strict=True)]
    return renormalized(torch.from_numpy(np.stack(out)).to(probs.device).clamp(min=0))


class SecLoss:
    presets: dict[str, dict[str, Any]] = {
        "psa": _SEC,
        "irn": _SEC,
        "tiny": dict(head="largefov", refine=False),
    }
    labels = Layout.SEEDS
    made_by = "make-seeds"

    def dataset(self, cfg: Any, data: LabelledDataset, ids: list[str], label_dir: Path) -> SeedSet:
        return SeedSet(data, ids, label_dir, cfg.crop_size, cfg.runtime.seed)

    def step(self, cfg: Any, net: nn.Module, batch: list[Tensor], ctx: Any) -> Tensor:
        images, seeds, labels = batch
        probs = renormalized(torch.softmax(net(images).float(), dim=1))
        cues = seed_cues(seeds, probs.shape[1], probs.shape[-2:])
        return (ops.sec_seed_loss(probs, cues) + ops.sec_expand_loss(probs, labels)
                + ops.sec_constrain_loss(probs, crf_probs(images, probs)))
