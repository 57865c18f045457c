"""AE-PSL's classifiers (Wei et al. CVPR 2017) read as one network: step ``t`` sees the
image with the regions of steps ``< t`` erased, as in training; its maps are fused by max."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wsss_cli import ops
from wsss_cli.models.classifier import CamNet


class ErasingNet(nn.Module):
    """The steps' CAM networks; ``threshold`` on each step's max-normalised CAM marks the
    regions erased (set to the mean, 0) from the input of the next step."""

    def __init__(self, steps: list[CamNet], threshold: float):
        super().__init__()
        self.steps, self.threshold = nn.ModuleList(steps), threshold

    def cams(self, x: torch.Tensor, reach: int = -1) -> torch.Tensor:
        """``x`` ``[B, 3, H, W]`` -> ``[B, C, H/s, W/s]``: per position the max over steps
        of each step's CAM divided by its maximum. The classes that erase are the first
        step's predicted ones (logit > 0, else the top one): inference has no labels.

        ``reach`` >= 0: a later step's map counts only within ``reach`` positions (a
        square, on the map's grid) of the regions the steps before it erased; -1: everywhere.
        """
        present = None
        fused, erased, mined = None, x, None
        for step in self.steps:
            cams = step.cams(erased)
            normed = cams / (cams.amax(dim=(2, 3), keepdim=True) + 1e-5)
            if present is None:
                present = ops.predicted_classes(step(x))
            if fused is None:
                fused = normed
            else:
                near = F.max_pool2d(mined, 2 * reach + 1, 1, reach) if reach >= 0 else 1
                fused = torch.maximum(fused, normed * near)
            mask = ops.region_mask(normed, present, self.threshold)
            mined = mask if mined is None else torch.maximum(mined, mask)
            erased = erased * (1 - F.interpolate(mask, x.shape[-2:], mode="nearest"))
        return fused
