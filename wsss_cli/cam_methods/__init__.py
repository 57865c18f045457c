"""CAM methods: what ``train-cls --method NAME`` trains and how ``dump-cams`` reads its maps.

A method is one module with an object satisfying :class:`CamMethod` and one
``CAM_METHODS.register`` line below (docs/adding-a-method.md). The classifier checkpoint
records its method, so dump-cams needs no option to read it.
"""

from __future__ import annotations

from typing import Any, Protocol

from torch import Tensor, nn

from wsss_cli.models.backbones import Backbone
from wsss_cli.registry import Registry


class CamMethod(Protocol):
    """``build`` the network, its training ``loss``, and its ``cams`` at inference."""

    def build(self, backbone: Backbone, num_classes: int, dropout: float) -> nn.Module:
        """The network over ``num_classes`` foreground classes; ``.backbone`` and ``.head``
        (the new layers, 10x learning rate) are its parameter groups."""

    def loss(self, net: nn.Module, batch: list[Tensor], ctx: Any) -> Tensor:
        """The training loss of a batch ``(images [B, 3, H, W], labels [B, C])``."""

    def cams(self, model: nn.Module, x: Tensor) -> Tensor:
        """Class maps ``[B, C, h, w]`` (any stride, >= 0) of a normalised batch ``x``."""


CAM_METHODS: Registry[CamMethod] = Registry("CAM method", "--method")


def _register_builtin() -> None:
    from wsss_cli.cam_methods import cam

    CAM_METHODS.register("cam", cam.CAM)


_register_builtin()
