"""Classification backbones: the :class:`Backbone` contract and the registry by name.

Every backbone maps an ImageNet-normalised ``[B, 3, H, W]`` batch to a list of feature
maps, shallow to deep; the first is at stride 4, the last three are the deep maps used by
classifiers and AffinityNet-style heads (see :class:`Backbone`).

Each registry entry says how to build the network, where its ImageNet weights come
from, and its preset family: the stages' presets are keyed by family (``psa`` for the
backbones of PSA, ``irn`` for IRN's, ``tiny`` for CPU runs from scratch).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from ...registry import Registry
from .base import Backbone, freeze_batchnorm

__all__ = ["BACKBONES", "Backbone", "BackboneSpec", "build_backbone", "freeze_batchnorm"]


@dataclass(frozen=True)
class BackboneSpec:
    builder: str  # "module:callable" under this package, imported on use
    family: str  # the presets' key: psa, irn or tiny
    imagenet_url: str | None = None  # downloadable ImageNet weights
    imagenet_howto: str | None = None  # what to do where there is no URL

    def build(self, **options: int) -> Backbone:
        module, name = self.builder.split(":")
        factory: Callable[..., Backbone] = getattr(importlib.import_module(f"{__name__}.{module}"), name)
        return factory(**options)


BACKBONES: Registry[BackboneSpec] = Registry("backbone", "--backbone")
BACKBONES.register("tiny", BackboneSpec(
    "tiny:TinyBackbone", "tiny",
    imagenet_howto="backbone tiny has no ImageNet weights; train it from scratch with --pretrained none"))
BACKBONES.register("resnet38", BackboneSpec(
    "resnet38:ResNet38", "psa",
    imagenet_howto="ImageNet weights for resnet38 have no download URL: get PSA's converted weights "
                   "(ilsvrc-cls_rna-a1_cls1000_ep-0001, converted from MXNet to a .pth with PSA's "
                   "network/resnet38d.py convert_mxnet_to_torch) and pass --pretrained PATH.pth"))
# torchvision's original ImageNet weights (IMAGENET1K_V1), the files IRN starts from
BACKBONES.register("resnet50", BackboneSpec(
    "resnet:resnet50", "irn", imagenet_url="https://download.pytorch.org/models/resnet50-19c8e357.pth"))
BACKBONES.register("resnet101", BackboneSpec(
    "resnet:resnet101", "irn", imagenet_url="https://download.pytorch.org/models/resnet101-5d3b4d8f.pth"))
BACKBONES.register("vgg16", BackboneSpec(
    "vgg:VGG16", "psa",
    imagenet_howto="ImageNet weights for vgg16 have no download URL: get PSA's converted Caffe "
                   "VGG16 20M weights (vgg16_20M.caffemodel, converted with PSA's network/vgg16d.py "
                   "convert_caffe_to_torch) and pass --pretrained PATH.pth"))


def build_backbone(name: str, **options: int) -> Backbone:
    """A freshly initialised (random weights) backbone ``name``, one of :data:`BACKBONES`.

    ``options`` go to the network's constructor (e.g. ``layer4_dilation`` of the ResNets).
    Raises :class:`WsssError` for an unknown name.
    """
    return BACKBONES.get(name).build(**options)
