"""CAM methods: what ``train-cls --method NAME`` trains and how ``dump-cams`` reads its maps.

A method is one module with an object satisfying :class:`CamMethod` and one
``CAM_METHODS.register`` line below (docs/adding-a-method.md). The classifier checkpoint
records its method, so dump-cams needs no option to read it. ``CAM_READERS`` are other
ways to read any classifier's maps (``dump-cams --method``: Grad-CAM, Grad-CAM++); they
need the network's ``features(x)`` and ``classify(features)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from torch import Tensor, nn

from wsss_cli.models.backbones import Backbone
from wsss_cli.registry import Registry


class CamReader(Protocol):
    def cams(self, model: nn.Module, x: Tensor) -> Tensor:
        """Class maps ``[B, C, h, w]`` (any stride) of a normalised batch ``x``."""

    def normalize(self, total: Tensor) -> Tensor:
        """The maps ``[n, H, W]`` summed over scales and flips -> values in [0, 1]."""


class CamMethod(CamReader, Protocol):
    """``build`` the network, its training ``loss``, and its ``cams`` at inference;
    ``configured`` binds train-cls's options, ``presets`` replace train-cls's (or None),
    ``options`` fill train-cls options left unset, ``recorded`` go into the checkpoint,
    ``train`` trains it (one network, or AE-PSL's steps), ``downstream[family][stage]``
    are its defaults for later stages."""

    presets: dict[str, dict[str, Any]] | None
    options: dict[str, Any]
    downstream: dict[str, dict[str, dict[str, Any]]]

    def configured(self, cfg: Any) -> CamMethod:
        """The method with the options of a resolved train-cls config."""

    def recorded(self) -> dict[str, Any]:
        """The options its network's shape depends on (checkpoint ``meta["method_options"]``)."""

    def train(self, cfg: Any, name: str) -> Path:
        """Train it on a resolved train-cls config; returns the classifier's ``model.pt``."""

    def build(self, backbone: Backbone, num_classes: int, dropout: float) -> nn.Module:
        """The network over ``num_classes`` foreground classes; ``.backbone`` and ``.head``
        (the new layers, 10x learning rate) are its parameter groups."""

    def loss(self, net: nn.Module, batch: list[Tensor], ctx: Any) -> Tensor:
        """The training loss of a batch ``(images [B, 3, H, W], labels [B, C])``."""


class Defaults:
    """The optional parts of a method or reading: train-cls's presets, the train-cls
    options it sets where the user left them unset (``options``), the learning-rate factor
    of its new layers (``head_lr_mult``), what its checkpoint must
    record to rebuild it (``recorded``), how it trains (``train``: one network), the
    defaults it brings to later stages (``downstream[family][stage]``), and PSA's
    normalisation of the summed maps, ``max(0, s) / (max s + 1e-5)`` per class."""

    presets: dict[str, dict[str, Any]] | None = None
    options: dict[str, Any] = {}  # noqa: RUF012 (read only)
    head_lr_mult: float | None = None  # None: the training loop's 10x for the new layers
    downstream: dict[str, dict[str, dict[str, Any]]] = {}  # noqa: RUF012 (read only)

    def configured(self, cfg: Any) -> Defaults:
        """The method with the options of a train-cls config (or of a checkpoint's
        ``recorded`` options, as attributes of the same names)."""
        return self

    def recorded(self) -> dict[str, Any]:
        """The train-cls options the network's shape depends on, kept in the checkpoint."""
        return {}

    def train(self, cfg: Any, name: str) -> Path:
        """Train on a resolved train-cls config as method ``name``; returns the model."""
        from wsss_cli.stages.train_cls import train_network

        return train_network(cfg, self, name)

    def normalize(self, total: Tensor) -> Tensor:
        return total.clamp(min=0) / (total.amax(dim=(1, 2), keepdim=True) + 1e-5)


CAM_METHODS: Registry[CamMethod] = Registry("CAM method", "--method")
CAM_READERS: Registry[CamReader] = Registry("CAM reading", "--method")


def _register_builtin() -> None:
    from wsss_cli.cam_methods import acol, cam, erasing, gradcam, hide_and_seek, mdc, seam

    CAM_METHODS.register("cam", cam.CAM)
    CAM_METHODS.register("seam", seam.SEAM)
    CAM_METHODS.register("has", hide_and_seek.HIDE_AND_SEEK)
    CAM_METHODS.register("acol", acol.ACOL)
    CAM_METHODS.register("erasing", erasing.ERASING)
    CAM_METHODS.register("mdc", mdc.MDC)
    CAM_READERS.register("gradcam", gradcam.GradCam(plus_plus=False))
    CAM_READERS.register("gradcam++", gradcam.GradCam(plus_plus=True))


_register_builtin()
