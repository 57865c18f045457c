"""Classification backbones: the :class:`Backbone` contract and the registry by name.

Every backbone maps an ImageNet-normalised ``[B, 3, H, W]`` batch to a list of feature
maps, shallow to deep; the first is at stride 4, the last three are the deep maps used by
classifiers and AffinityNet-style heads (see :class:`Backbone`).
"""

from __future__ import annotations

from collections.abc import Callable

from ...errors import WsssError
from .base import Backbone, freeze_batchnorm

BACKBONES: tuple[str, ...] = ("tiny", "resnet38", "resnet50", "resnet101", "vgg16")

__all__ = ["BACKBONES", "Backbone", "build_backbone", "freeze_batchnorm"]


def _factories() -> dict[str, Callable[[], Backbone]]:
    # Imported lazily: only the requested network's module is needed.
    from .resnet import resnet50, resnet101
    from .resnet38 import ResNet38
    from .tiny import TinyBackbone
    from .vgg import VGG16

    return {
        "tiny": TinyBackbone,
        "resnet38": ResNet38,
        "resnet50": resnet50,
        "resnet101": resnet101,
        "vgg16": VGG16,
    }


def build_backbone(name: str, **options: int) -> Backbone:
    """A freshly initialised (random weights) backbone ``name``, one of :data:`BACKBONES`.

    ``options`` go to the network's constructor (e.g. ``layer4_dilation`` of the ResNets).
    Raises :class:`WsssError` for an unknown name.
    """
    if name not in BACKBONES:
        raise WsssError(f"unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}")
    return _factories()[name](**options)
