"""Backbones: declared shapes, weight loading in torchvision/PSA layouts, frozen BatchNorm."""

from __future__ import annotations

import functools
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from wsss_cli.errors import WsssError
from wsss_cli.models.backbones import BACKBONES, Backbone, build_backbone, freeze_batchnorm
from wsss_cli.models.weights import load_pretrained


@pytest.fixture(autouse=True)
def _seed_and_one_thread() -> Iterator[None]:
    # One intra-op thread: these tiny convolutions gain nothing from two, and OpenMP
    # threads slow down by 10x when other processes compete for the two cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


@functools.cache
def _shared(name: str) -> Backbone:
    """One instance per big backbone for the whole module: building them costs seconds."""
    return build_backbone(name).eval()


@pytest.fixture(scope="module", autouse=True)
def _release_shared() -> Iterator[None]:
    yield
    _shared.cache_clear()  # ~0.8 GB of weights: do not keep them for the other test files


def _perturbed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A copy of ``state`` with every float tensor changed (so loading is observable)."""
    return {k: v + 0.01 if v.is_floating_point() else v.clone() for k, v in state.items()}


def _assert_loaded(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    own = model.state_dict()
    for k, v in own.items():
        if k in state:
            assert torch.equal(v, state[k]), k


@pytest.mark.parametrize("name", BACKBONES.names())
def test_forward_matches_declared_channels_and_strides(name: str) -> None:
    net = _shared(name)
    assert isinstance(net, Backbone)
    assert net.output_stride == net.stage_strides[-1]
    assert len(net.stage_channels) == len(net.stage_strides) >= 4
    assert net.stage_strides[0] == 4  # the shallow stride-4 map comes first
    size = 64
    batch = 2 if name == "tiny" else 1
    with torch.no_grad():
        maps = net(torch.randn(batch, 3, size, size))
    assert len(maps) == len(net.stage_channels)
    for m, c, s in zip(maps, net.stage_channels, net.stage_strides, strict=True):
        assert m.shape == (batch, c, size // s, size // s)
        assert torch.isfinite(m).all()


def test_unknown_backbone_lists_choices() -> None:
    with pytest.raises(WsssError, match="resnet50"):
        build_backbone("resnet18")


def test_tiny_is_small_and_trains() -> None:
    net = build_backbone("tiny")
    assert sum(p.numel() for p in net.parameters()) < 2_500_000
    maps = net(torch.randn(4, 3, 32, 48))
    assert maps[-1].shape == (4, 256, 4, 6)
    maps[-1].mean().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_resnet50_loads_torchvision_layout(tmp_path: Path) -> None:
    net = _shared("resnet50")
    state = _perturbed(net.state_dict())
    # A torchvision checkpoint also holds the ImageNet classifier, which we ignore.
    state["fc.weight"] = torch.randn(1000, 2048)
    state["fc.bias"] = torch.randn(1000)
    assert "layer4.0.downsample.0.weight" in state and "layer3.5.bn3.running_var" in state
    path = tmp_path / "resnet50.pth"
    torch.save(state, path)

    load_pretrained(net, "resnet50", str(path))
    _assert_loaded(net, state)


def test_checkpoint_wrappers_are_unwrapped(tmp_path: Path) -> None:
    tiny = build_backbone("tiny")
    state = _perturbed(tiny.state_dict())
    wrapped = {"state_dict": {f"module.backbone.{k}": v for k, v in state.items()}}
    wrapped["state_dict"]["module.classifier.weight"] = torch.randn(20, 256, 1, 1)
    torch.save(wrapped, tmp_path / "ddp.pth")
    torch.save({"model": state, "epoch": 3}, tmp_path / "model.pth")
    for file in ("ddp.pth", "model.pth"):
        net = build_backbone("tiny")
        load_pretrained(net, "tiny", str(tmp_path / file))
        _assert_loaded(net, state)


def test_resnet38_loads_psa_layout(tmp_path: Path) -> None:
    net = _shared("resnet38")
    keys = net.state_dict().keys()
    for k in (
        "conv1a.weight",
        "b2.conv_branch1.weight",
        "b4_5.bn_branch2b1.running_mean",
        "b6.conv_branch2b2.weight",
        "b7.bn_branch2b2.weight",
        "bn7.running_var",
    ):
        assert k in keys, k
    # PSA's MXNet conversion has no num_batches_tracked; its classifier adds fc8.
    state = {
        k: v for k, v in _perturbed(net.state_dict()).items() if "num_batches_tracked" not in k
    }
    state["fc8.weight"] = torch.randn(20, 4096, 1, 1)
    path = tmp_path / "res38.pth"
    torch.save(state, path)

    load_pretrained(net, "resnet38", str(path))
    _assert_loaded(net, state)


def test_other_architecture_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "tiny.pth"
    torch.save(build_backbone("tiny").state_dict(), path)
    with pytest.raises(WsssError, match="tiny.pth"):
        load_pretrained(_shared("resnet50"), "resnet50", str(path))


def test_wrong_shape_is_rejected(tmp_path: Path) -> None:
    state = build_backbone("tiny").state_dict()
    state["layer4.1.conv3.weight"] = torch.randn(7, 64, 1, 1)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(WsssError, match="layer4.1.conv3.weight"):
        load_pretrained(build_backbone("tiny"), "tiny", str(path))


def test_missing_or_unreadable_file_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(WsssError, match="not found"):
        load_pretrained(build_backbone("tiny"), "tiny", str(tmp_path / "nope.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WsssError, match="junk.pth"):
        load_pretrained(build_backbone("tiny"), "tiny", str(junk))


def test_none_keeps_weights() -> None:
    net = build_backbone("tiny")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    load_pretrained(net, "tiny", "none")
    _assert_loaded(net, before)


def test_imagenet_offline_says_use_pretrained_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    net = _shared("resnet50")
    with pytest.raises(WsssError, match="--pretrained") as err:
        load_pretrained(net, "resnet50", "imagenet")
    assert "resnet50-19c8e357.pth" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["tiny", "resnet38"])
def test_imagenet_unavailable_backbones_explain(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("must not download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", never)
    net = nn.Identity()  # the error comes before the backbone is touched
    with pytest.raises(WsssError, match="--pretrained"):
        load_pretrained(net, name, "imagenet")  # type: ignore[arg-type]


def test_freeze_batchnorm_keeps_running_stats() -> None:
    net = build_backbone("tiny")
    wrapper = nn.Sequential(net)
    freeze_batchnorm(wrapper)
    assert net.frozen_bn
    wrapper.train()  # must not unfreeze
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(not m.training for m in bns)
    assert all(not p.requires_grad for m in bns for p in m.parameters())
    before = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
    net(torch.randn(2, 3, 32, 32) * 3 + 1)[-1].sum().backward()
    for k, v in before.items():
        assert torch.equal(net.state_dict()[k], v), k
    assert any(p.requires_grad for p in net.parameters())  # convs still train


def test_freeze_batchnorm_survives_outer_train_on_plain_module() -> None:
    # A plain nn.Module (not a Backbone) holding BN: the forward hook keeps it frozen.
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    freeze_batchnorm(model)
    model.train()
    before = model[1].running_mean.clone()
    model(torch.randn(2, 3, 8, 8) + 5)
    assert torch.equal(model[1].running_mean, before)
