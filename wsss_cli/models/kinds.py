"""Checkpoint kinds: ``meta["kind"]`` of a saved model -> how to rebuild its network.

Every stage that reads a model (dump-cams, random-walk, predict, train-* with
``--pretrained cls``) loads it here, checked against the dataset's class count, so no
stage imports another to rebuild its network.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from torch import nn

from wsss_cli.errors import WsssError
from wsss_cli.registry import Registry
from wsss_cli.training import check_meta, load_checkpoint

# the checkpoint kinds (``meta["kind"]``), each saved in the work folder's folder of that name
CLASSIFIER, AFFINITY, SEGMENTATION, SINGLE_STAGE = "cls", "aff", "seg", "single-stage"
PAIRWISE = "pairwise"  # IAL's pairwise network

Builder = Callable[[dict[str, Any]], nn.Module]
MODEL_KINDS: Registry[Builder] = Registry("checkpoint kind", "--model")


def _classifier(meta: dict[str, Any]) -> nn.Module:
    from wsss_cli.cam_methods import CAM_METHODS
    from wsss_cli.models.backbones import build_backbone

    options = SimpleNamespace(**meta.get("method_options", {}))
    method = CAM_METHODS.get(meta.get("method", "cam")).configured(options)
    return method.build(build_backbone(meta["backbone"]), meta["num_classes"] - 1, 0.0)


def _affinity(meta: dict[str, Any]) -> nn.Module:
    from wsss_cli.models.affinity_net import AffinityNet
    from wsss_cli.models.backbones import build_backbone

    return AffinityNet(build_backbone(meta["backbone"]))


def _segmentation(meta: dict[str, Any]) -> nn.Module:
    from wsss_cli.models.backbones import build_backbone
    from wsss_cli.models.segmentation import BACKBONE_OPTIONS, SegNet

    backbone = build_backbone(meta["backbone"], **BACKBONE_OPTIONS.get(meta["backbone"], {}))
    return SegNet(backbone, meta["num_classes"], meta["head"], meta["refine"])


def _single_stage(meta: dict[str, Any]) -> nn.Module:
    from wsss_cli.models.backbones import build_backbone
    from wsss_cli.models.single_stage import HeadConfig, SingleStageNet

    return SingleStageNet(build_backbone(meta["backbone"]), meta["num_classes"] - 1,
                          HeadConfig.from_meta(meta["head"]))


MODEL_KINDS.register(CLASSIFIER, _classifier)
MODEL_KINDS.register(AFFINITY, _affinity)
def _pairwise(meta: dict[str, Any]) -> nn.Module:
    from wsss_cli.models.backbones import build_backbone
    from wsss_cli.models.pairwise import PairwiseNet

    return PairwiseNet(build_backbone(meta["backbone"]), meta["num_classes"])


MODEL_KINDS.register(SEGMENTATION, _segmentation)
MODEL_KINDS.register(SINGLE_STAGE, _single_stage)
MODEL_KINDS.register(PAIRWISE, _pairwise)


def load_model(path: Path, kinds: tuple[str, ...], num_classes: int | None = None,
               ) -> tuple[nn.Module, dict[str, Any]]:
    """The network saved at ``path`` (eval mode, weights loaded) and its meta.

    ``kinds``: the checkpoint kinds the caller accepts; ``num_classes`` (background
    included), when given, must match the checkpoint's.
    """
    ckpt = load_checkpoint(path)
    meta = ckpt.get("meta", {})
    kind = meta.get("kind")
    if kind not in kinds:
        wanted = " or ".join(repr(k) for k in kinds)
        raise WsssError(f"{path}: checkpoint has kind={kind!r}, expected {wanted}")
    if num_classes is not None:
        check_meta(path, meta, {"num_classes": num_classes})
    model = MODEL_KINDS.get(kind)(meta)
    model.load_state_dict(ckpt["model"])
    return model.eval(), meta
