"""Segmentation losses: what ``train-seg --loss NAME`` trains the network with.

A loss is one module with an object satisfying :class:`SegLoss` and one
``SEG_LOSSES.register`` line below (docs/adding-a-method.md). The network is the same
DeepLab-style ``SegNet`` whatever the loss, so ``predict`` and ``eval`` need nothing new.
"""

from __future__ import annotations

from typing import Any, Protocol

from torch import Tensor, nn
from torch.utils.data import Dataset

from wsss_cli.registry import Registry


class SegLoss(Protocol):
    """``presets[family]``: train-seg preset values the loss changes (its schedule, its
    head); ``labels``: the artifact set it trains on by default, ``made_by`` the commands
    that write it; ``dataset`` reads the
    training samples, ``step`` returns a batch's loss."""

    presets: dict[str, dict[str, Any]]
    labels: str
    made_by: str

    def dataset(self, cfg: Any, data: Any, ids: list[str], label_dir: Any) -> Dataset:
        """``dataset[(epoch, i)]`` -> the arrays of one training sample."""

    def step(self, cfg: Any, net: nn.Module, batch: list[Tensor], ctx: Any) -> Tensor:
        """The scalar loss of a batch already on the device under train-seg's ``cfg``."""


SEG_LOSSES: Registry[SegLoss] = Registry("segmentation loss", "--loss")


def _register_builtin() -> None:
    from wsss_cli.seg_losses.cross_entropy import CrossEntropy
    from wsss_cli.seg_losses.sec import SecLoss

    SEG_LOSSES.register("ce", CrossEntropy())
    SEG_LOSSES.register("sec", SecLoss())


_register_builtin()
