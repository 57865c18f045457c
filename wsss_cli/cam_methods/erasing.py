"""Adversarial erasing, AE-PSL (Wei et al. CVPR 2017; no public code): step ``t`` trains a
plain CAM classifier on the images with the regions mined at steps ``< t`` erased (set to
the dataset mean), then mines where its CAM of an image's class reaches ``threshold``;
the union over steps is the object. ``stages/erasing_steps.py`` runs the steps; the saved
classifier holds every step's network and fuses their maps by max (``models.erasing``)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from torch import Tensor, nn

from wsss_cli.cam_methods import Defaults
from wsss_cli.cam_methods.cam import CAM
from wsss_cli.models.backbones import Backbone
from wsss_cli.models.erasing import ErasingNet

STEPS = 3  # the paper's
# ours: the paper erases the top of the heat map; 0.8 measured against 0.5 on two held-out
# sets (docs/results.md#compare)
THRESHOLD = 0.8
# ours, for tiny: a later step's map counts only next to the regions erased before it
# (within this many map positions); elsewhere it lit up the background
# (docs/results.md#compare). -1, everywhere, is AE-PSL's plain max, kept for the others.
TINY_REACH = 1


@dataclass(frozen=True)
class Erasing(Defaults):
    steps: int = STEPS
    threshold: float = THRESHOLD
    reach: int = -1
    # filled in where unset, so that the settings hash names it (runs made under the former
    # default, 0.5, hashed without it, are not taken for runs at 0.8)
    options: ClassVar[dict[str, Any]] = {"erase_threshold": THRESHOLD}
    # tiny's reach is set in dump-cams's config, so that its settings hash names it
    downstream: ClassVar[dict[str, dict[str, dict[str, Any]]]] = {
        "tiny": {"dump-cams": {"erase_reach": TINY_REACH}}}

    def configured(self, cfg: Any) -> Erasing:
        """With train-cls's ``erase_steps`` and ``erase_threshold``, dump-cams's ``erase_reach``."""
        reach = getattr(cfg, "erase_reach", None)
        return Erasing(getattr(cfg, "erase_steps", None) or self.steps,
                       getattr(cfg, "erase_threshold", None) or self.threshold,
                       self.reach if reach is None else reach)

    def recorded(self) -> dict[str, Any]:
        return {"erase_steps": self.steps, "erase_threshold": self.threshold}

    def build(self, backbone: Backbone, num_classes: int, dropout: float) -> nn.Module:
        """Every step's plain CAM network (each on its own copy of ``backbone``)."""
        nets = [CAM.build(backbone if t == 0 else copy.deepcopy(backbone), num_classes, dropout)
                for t in range(self.steps)]
        return ErasingNet(nets, self.threshold)

    def loss(self, net: nn.Module, batch: list[Tensor], ctx: Any) -> Tensor:
        """Each step trains a plain CAM network with the plain CAM's loss."""
        return CAM.loss(net, batch, ctx)

    def train(self, cfg: Any, name: str) -> Path:
        from wsss_cli.stages.erasing_steps import train_steps

        return train_steps(cfg, self, name)

    def cams(self, model: nn.Module, x: Tensor) -> Tensor:
        return model.cams(x, self.reach)


ERASING = Erasing()
