"""The backbone contract shared by every network, and BatchNorm freezing."""

from __future__ import annotations

import abc

from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

# Attribute set on a BatchNorm layer once freeze_batchnorm has handled it.
_FROZEN_ATTR = "_wsss_bn_frozen"


class Backbone(nn.Module, metaclass=abc.ABCMeta):
    """A feature extractor returning one feature map per stage.

    Input: ``x`` of shape ``[B, 3, H, W]``, RGB, ImageNet-normalised
    (``(x / 255 - mean) / std``). Output: a list with one map per stage, shallow to deep;
    map ``i`` has shape ``[B, stage_channels[i], ~H / stage_strides[i], ~W / stage_strides[i]]``
    (exactly ``H / s`` when ``H`` is a multiple of the output stride).

    Every backbone follows the same layout rule: the first map is a shallow stride-4 map,
    the last three are the deep maps (the last one at ``output_stride``) that
    classifiers and AffinityNet-style heads consume.
    """

    stage_channels: tuple[int, ...] = ()
    stage_strides: tuple[int, ...] = ()
    # True once freeze_batchnorm ran on this backbone: BN layers stay in eval mode.
    frozen_bn: bool = False

    @abc.abstractmethod
    def forward(self, x: Tensor) -> list[Tensor]:
        """``[B, 3, H, W]`` -> one ``[B, C_i, H / s_i, W / s_i]`` map per stage."""

    @property
    def output_stride(self) -> int:
        """Stride of the deepest map w.r.t. the input."""
        return self.stage_strides[-1]

    def train(self, mode: bool = True) -> Backbone:
        """Like ``nn.Module.train``, but frozen BatchNorm layers stay in eval mode."""
        super().train(mode)
        if self.frozen_bn:
            for m in self.modules():
                if getattr(m, _FROZEN_ATTR, False):
                    m.eval()
        return self


def init_conv_bn(module: nn.Module) -> None:
    """He-normal convolutions (fan out) and identity BatchNorms, as torchvision's ResNets."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _keep_eval(module: nn.Module, args: tuple) -> None:
    # A parent that is not a Backbone may have called .train() on us; a frozen BN must
    # normalise with its stored statistics and never update them, so force eval here.
    module.training = False


def freeze_batchnorm(module: nn.Module) -> None:
    """Freeze every BatchNorm layer inside ``module`` (``module`` itself included).

    The layers go to eval mode (running mean/var are used and never updated) and their
    affine parameters get ``requires_grad=False``. They stay frozen across later
    ``.train()`` calls, on this module or on any parent: a Backbone re-applies eval mode
    in ``train`` and each layer also carries a forward pre-hook that forces eval mode.
    Calling it twice is harmless.
    """
    for m in module.modules():
        if isinstance(m, _BatchNorm):
            m.eval()
            for p in m.parameters(recurse=False):
                p.requires_grad_(False)
            if not getattr(m, _FROZEN_ATTR, False):
                m.register_forward_pre_hook(_keep_eval)
                setattr(m, _FROZEN_ATTR, True)
        if isinstance(m, Backbone):
            m.frozen_bn = True
