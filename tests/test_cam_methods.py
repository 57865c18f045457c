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

from wsss_cli.cam_methods import CAM_METHODS
from wsss_cli.data.toy import make_toy_dataset
from wsss_cli.models.classifier import CamNet
from wsss_cli.training import load_checkpoint
from wsss_cli.workdir import read_cams


class MaxPooledCam:
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
