"""CAM methods are pluggable: a method defined here (one module, one registry line) is
trained by train-cls, recorded in the checkpoint and read back by dump-cams, next to the
built-in CAM's maps in the same work folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from stage_runs import invoke, stage_args
from torch import Tensor, nn

from wsss_cli import ops
from wsss_cli.cam_methods import CAM_METHODS, CAM_READERS, Defaults
from wsss_cli.data.toy import make_toy_dataset
from wsss_cli.models.backbones import build_backbone
from wsss_cli.models.classifier import CamNet
from wsss_cli.models.seam import SeamNet
from wsss_cli.stages.common import method_preset
from wsss_cli.stages.train_cls import TrainClsConfig
from wsss_cli.training import load_checkpoint
from wsss_cli.workdir import Workdir, read_cams


class MaxPooledCam(Defaults):
    """A classifier trained through global max pooling whose maps are uniform, so that the
    test can tell that dump-cams read them through the method."""

    def build(self, backbone: nn.Module, num_classes: int, dropout: float) -> nn.Module:
        return CamNet(backbone, num_classes, dropout)

    def loss(self, net: nn.Module, batch: list[Tensor], ctx) -> Tensor:
        images, labels = batch
        logits = net.cams(images).amax(dim=(2, 3))
        return F.multilabel_soft_margin_loss(logits.float(), labels)

    def cams(self, model: nn.Module, x: Tensor) -> Tensor:
        return torch.ones_like(model.cams(x))


@pytest.fixture()
def max_pooled():
    CAM_METHODS.register("max-pooled", MaxPooledCam())
    yield
    CAM_METHODS.unregister("max-pooled")


def test_a_registered_method_trains_and_dumps_beside_the_plain_cam(tmp_path, max_pooled):
    data, work = tmp_path / "toy", tmp_path / "w"
    make_toy_dataset(data, num_train=8, num_val=2, size=48)
    invoke(stage_args("train-cls", data, work))
    invoke(stage_args("dump-cams", data, work))
    invoke([*stage_args("train-cls", data, work), "--method", "max-pooled", "--out", "cls_max"])
    invoke([*stage_args("dump-cams", data, work), "--cls-model", str(work / "cls_max/model.pt"),
            "--out", "cams_max"])

    assert load_checkpoint(work / "cls_max/model.pt")["meta"]["method"] == "max-pooled"
    state = json.loads((work / "state.json").read_text())
    assert state["train-cls:cls_max"]["status"] == "done" and state["train-cls"]["status"] == "done"
    assert state["dump-cams:cams_max"]["count"] == 8 and state["dump-cams"]["count"] == 8
    image_id = sorted(p.stem for p in (work / "cams").glob("*.npz"))[0]
    classes, plain = read_cams(work / "cams" / f"{image_id}.npz")
    classes_max, uniform = read_cams(work / "cams_max" / f"{image_id}.npz")
    np.testing.assert_array_equal(classes, classes_max)
    assert uniform.shape == plain.shape
    np.testing.assert_allclose(uniform, 1.0, atol=1e-3)  # summed over scales, normalised


def test_an_unknown_method_is_a_one_line_user_error(tmp_path):
    from click.testing import CliRunner

    from wsss_cli.cli import main

    make_toy_dataset(tmp_path / "toy", num_train=4, num_val=2, size=48)
    result = CliRunner().invoke(main, ["train-cls", "--data", str(tmp_path / "toy"), "--workdir",
                                       str(tmp_path / "w"), "--backbone", "tiny", "--method", "seam2"])
    assert result.exit_code == 2 and "--method 'seam2'" in result.output and "cam" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "w").exists()


def unit_peak(maps: np.ndarray) -> np.ndarray:
    return maps / np.maximum(maps.max(axis=(1, 2), keepdims=True), 1e-12)


def test_gradcam_readings_of_a_trained_classifier(tmp_path):
    data, work = tmp_path / "toy", tmp_path / "w"
    make_toy_dataset(data, num_train=8, num_val=2, size=48)
    invoke(stage_args("train-cls", data, work))
    invoke(stage_args("dump-cams", data, work))  # two scales: Grad-CAMs weigh them as CAMs
    for method in ("gradcam", "gradcam++"):
        invoke([*stage_args("dump-cams", data, work), "--method", method, "--out", f"cams_{method}"])
    state = json.loads((work / "state.json").read_text())
    assert state["dump-cams:cams_gradcam"]["settings"]["method"] == "gradcam"
    differs = False
    for path in sorted((work / "cams").glob("*.npz")):
        classes, plain = read_cams(path)
        classes_g, grad = read_cams(work / "cams_gradcam" / path.name)
        classes_pp, plus = read_cams(work / "cams_gradcam++" / path.name)
        np.testing.assert_array_equal(classes, classes_g)
        np.testing.assert_array_equal(classes, classes_pp)
        # a linear classifier after average pooling: Grad-CAM is the CAM
        np.testing.assert_allclose(unit_peak(grad), unit_peak(plain), atol=2e-3)
        assert plus.shape == plain.shape and plus.min() >= 0 and plus.max() <= 1
        differs |= not np.allclose(plus, plain, atol=1e-3)
    assert differs  # Grad-CAM++ weighs the channels by more than the class weights


def test_gradcam_plus_plus_weights_channels_by_their_gradients():
    torch.manual_seed(0)
    net = CamNet(build_backbone("tiny"), 3).eval()
    x = torch.randn(2, 3, 40, 48)
    maps = CAM_READERS.get("gradcam++").cams(net, x)
    features = net.features(x)
    assert maps.shape == (2, 3, *features.shape[-2:])
    # the class's gradient at every position is its weight over h*w
    grads = net.classifier.weight[:, :, 0, 0][None, :, :, None, None] / features[0, 0].numel()
    for c in range(3):
        g = grads[:, c].expand_as(features)
        want = ops.gradcam(features, g, plus_plus=True) * features[0, 0].numel()
        torch.testing.assert_close(maps[:, c], want, rtol=1e-4, atol=1e-6)


def test_seam_trains_and_dumps_min_max_normalised_refined_maps(tmp_path):
    data, work = tmp_path / "toy", tmp_path / "w"
    make_toy_dataset(data, num_train=8, num_val=2, size=48)
    invoke([*stage_args("train-cls", data, work), "--method", "seam", "--seam-scale", "0.5"])
    invoke(stage_args("dump-cams", data, work))
    invoke([*stage_args("dump-cams", data, work), "--seam-maps", "refined", "--out", "cams_refined"])
    ckpt = load_checkpoint(work / "cls/model.pt")
    assert ckpt["meta"]["method"] == "seam"
    state = json.loads((work / "state.json").read_text())
    assert state["train-cls"]["settings"]["seam_scale"] == 0.5
    assert (state["dump-cams"]["cam_method"], state["dump-cams"]["backbone"]) == ("seam", "tiny")
    # tiny reads the CAM head by default, the PCM's maps on request
    assert state["dump-cams"]["settings"]["seam_maps"] == "cam"
    assert state["dump-cams:cams_refined"]["settings"]["seam_maps"] == "refined"
    refined = [read_cams(p)[1] for p in sorted((work / "cams_refined").glob("*.npz"))]
    head = [read_cams(p)[1] for p in sorted((work / "cams").glob("*.npz"))]
    assert len(refined) == len(head) == 8
    pairs = zip(refined, head, strict=True)
    assert any(r.shape == h.shape and not np.allclose(r, h, atol=1e-2) for r, h in pairs)
    for path in [*sorted((work / "cams").glob("*.npz")), *sorted((work / "cams_refined").glob("*.npz"))]:
        classes, cams = read_cams(path)
        assert len(classes) == len(cams) and cams.min() >= 0 and cams.max() <= 1
        for cam in cams:  # min-max: each present class spans [0, ~1] unless its map is flat
            assert cam.min() == 0 and (cam.max() > 0.99 or cam.max() == 0)


def test_seam_net_refines_without_training_the_backbone_through_the_pcm():
    torch.manual_seed(0)
    net = SeamNet(build_backbone("tiny"), 3)
    cams, refined = net(torch.randn(2, 3, 48, 40))
    assert cams.shape == refined.shape == (2, 4, 48, 40)
    refined.sum().backward()
    assert all(p.grad is None for p in net.backbone.parameters())
    assert all(p.grad is not None for p in net.project.parameters())
    assert net.pcm_features.weight.grad.abs().sum() > 0
    assert net.classifier.weight.grad is None  # the PCM's input CAMs carry no gradient


def test_seam_normalisation_is_min_max_after_clipping():
    total = torch.tensor([[[-1.0, 0.5], [1.0, 2.0]]])
    out = CAM_METHODS.get("seam").normalize(total)
    torch.testing.assert_close(out, torch.tensor([[[0.0, 0.25], [0.5, 1.0]]]), atol=2e-5, rtol=0)


def test_seam_brings_train_seam_presets_for_imagenet_backbones(tmp_path):
    cfg = TrainClsConfig(data=tmp_path, workdir=tmp_path, backbone="resnet38", method="seam").resolved()
    got = (cfg.epochs, cfg.batch_size, cfg.lr, cfg.crop_size, cfg.resize_long)
    assert got == (8, 8, 0.01, 448, (448, 768))
    assert cfg.freeze_bn is True and cfg.color_jitter == 0.3 and cfg.seam_scale == 0.3
    tiny = TrainClsConfig(data=tmp_path, workdir=tmp_path, backbone="tiny", method="seam").resolved()
    assert tiny.seam_scale == 0.7 and tiny.epochs == 24
    assert TrainClsConfig(data=tmp_path, workdir=tmp_path, backbone="resnet38").resolved().lr == 0.1


def test_seam_cams_of_an_imagenet_backbone_bring_seams_later_defaults(tmp_path):
    workdir = Workdir(tmp_path)
    workdir.update_stage("dump-cams:cams_seam", cam_method="seam", backbone="resnet38")
    workdir.update_stage("dump-cams", cam_method="cam", backbone="resnet38")
    workdir.update_stage("dump-cams:cams_tiny", cam_method="seam", backbone="tiny")
    assert method_preset(tmp_path, "cams_seam", "make-aff-labels") == {"alpha_low": 4.0, "alpha_high": 24.0}
    assert method_preset(tmp_path, "cams_seam", "random-walk") == {"alpha": 6.0, "logt": 6}
    assert method_preset(tmp_path, "cams", "random-walk") == {}
    assert method_preset(tmp_path, "cams_tiny", "random-walk") == {}  # tiny keeps its own walk
    assert method_preset(tmp_path, "never_made", "random-walk") == {}
