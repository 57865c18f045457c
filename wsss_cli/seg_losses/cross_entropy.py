"""Cross-entropy on dense pseudo-labels (255 = ignore), DeepLab's loss: the default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from wsss_cli.data.augment import AugmentConfig
from wsss_cli.data.dataset import LabelledDataset
from wsss_cli.data.loaders import SegmentationSet
from wsss_cli.workdir import Layout


class CrossEntropy:
    """The logits, upsampled to the crop, against the labels; random rescaling
    (``--scale-range``), crop and flip, no colour jitter (as DeepLab), optionally without
    the background next to objects (``--ignore-band``); each class weighted by
    ``--class-weights``."""

    presets: dict[str, dict[str, Any]] = {}
    labels = Layout.PSEUDO
    made_by = "random-walk or make-pseudo"

    def dataset(self, cfg: Any, data: LabelledDataset, ids: list[str], label_dir: Path) -> SegmentationSet:
        aug = AugmentConfig(crop=cfg.crop_size, resize_long=cfg.resize_long, scale=cfg.scale_range,
                            color_jitter=0.0)
        return SegmentationSet(data, ids, label_dir, aug, cfg.runtime.seed, cfg.ignore_band,
                               cfg.ignore_band_color)

    def step(self, cfg: Any, net: nn.Module, batch: list[Tensor], ctx: Any) -> Tensor:
        images, labels = batch
        logits = F.interpolate(net(images).float(), labels.shape[-2:], mode="bilinear",
                               align_corners=False)
        weight = None if cfg.class_weights is None else logits.new_tensor(cfg.class_weights)
        return F.cross_entropy(logits, labels, weight=weight, ignore_index=255)
