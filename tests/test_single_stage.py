"""train-single-stage: the network, its losses, a short training run and the command line."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from wsss_cli.cli import main
from wsss_cli.data.augment import normalize
from wsss_cli.data.dataset import VocDataset
from wsss_cli.data.toy import make_toy_dataset
from wsss_cli.errors import WsssError
from wsss_cli.models.backbones import build_backbone
from wsss_cli.models.kinds import load_model
from wsss_cli.models.single_stage import HeadConfig, SingleStageNet, head_defaults
from wsss_cli.runtime import Runtime
from wsss_cli.stages import train_single_stage as tss
from wsss_cli.stages.predict import SEGMENTERS
from wsss_cli.training import StepContext

QUIET = Runtime(device="cpu", quiet=True)


def _tiny_net(num_fg: int = 5, psi: float = 0.3) -> SingleStageNet:
    torch.manual_seed(0)
    return SingleStageNet(build_backbone("tiny"), num_fg, HeadConfig(**head_defaults("tiny"), psi=psi))


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("toy")
    make_toy_dataset(root, num_train=16, num_val=4, size=64)
    return root


@pytest.fixture(scope="module")
def trained(toy, tmp_path_factory) -> Path:
    """A 2-epoch run whose first epoch is classification only; returns its workdir."""
    workdir = tmp_path_factory.mktemp("ss")
    cfg = tss.TrainSingleStageConfig(data=toy, workdir=workdir, backbone="tiny", epochs=2,
                                     pretrain_epochs=1, batch_size=8, crop_size=64, pamr_iters=3,
                                     workers=0, runtime=QUIET)
    assert tss.run(cfg) == workdir / "single_stage" / "model.pt"
    return workdir


def test_forward_and_segment_shapes():
    net = _tiny_net()
    x = torch.randn(2, 3, 64, 80)
    out = net(x)
    assert out.scores.shape == (2, 5)
    assert out.masks.shape == out.logits.shape == (2, 6, 16, 20)
    torch.testing.assert_close(out.masks.sum(1), torch.ones(2, 16, 20))
    assert torch.equal(out.logits[:, 0], torch.ones(2, 16, 20))  # constant background logit
    net.eval()
    logits = net.segment(x)
    assert logits.shape == (2, 6, 16, 20)
    assert torch.equal(logits, net.segment(x))


def test_gate_is_random_in_training_and_fixed_at_inference():
    net = _tiny_net().eval()  # BatchNorm and dropout deterministic: only the gate varies
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert not torch.equal(net.mask_logits(x, gate_training=True), net.mask_logits(x, True))
        assert torch.equal(net.mask_logits(x, gate_training=False), net.segment(x))
        assert torch.equal(net(x).logits, net.segment(x))  # eval forward = inference mix
    no_gate = _tiny_net(psi=0.0).eval()
    with torch.no_grad():  # psi 0: deep features only, in training as at inference
        torch.testing.assert_close(no_gate.mask_logits(x, True), no_gate.segment(x))


def test_mask_loss_weights_classes_and_skips_incomplete_images():
    # image 0 (labels: class 1): 5 background, 2 class-1, 1 unlabelled pixel -> N = 7
    # image 1 (labels: classes 1, 2): no class-2 pixel in its pseudo GT -> does not count
    pseudo = torch.zeros(2, 3, 2, 4)
    pseudo[:, 0].view(2, -1)[:, :5] = 1
    pseudo[:, 1].view(2, -1)[:, 5:7] = 1
    labels = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    logits = torch.zeros(2, 3, 2, 4)  # cross-entropy log(3) at every pixel
    per_pixel = math.log(3)
    # background weighs (7 - 5) / 8, class 1 (7 - 2) / 8; the sum is divided by all 8 pixels
    image0 = (5 * 2 / 8 + 2 * 5 / 8) * per_pixel / 8
    loss = tss.balanced_mask_loss(logits, pseudo, labels)
    assert loss.item() == pytest.approx(image0 / 2, rel=1e-6)
    # with its missing class present, image 1 counts too
    pseudo[1, 2, 1, 3] = 1
    image1 = (5 * 3 / 9 + 2 * 6 / 9 + 1 * 7 / 9) * per_pixel / 8
    loss = tss.balanced_mask_loss(logits, pseudo, labels)
    assert loss.item() == pytest.approx((image0 + image1) / 2, rel=1e-6)


def test_mask_loss_pulls_logits_towards_the_pseudo_gt():
    pseudo = torch.zeros(1, 2, 4, 4)
    pseudo[0, 0, :, :2] = 1
    pseudo[0, 1, :, 2:] = 1
    labels = torch.tensor([[1.0]])
    logits = torch.zeros(1, 2, 4, 4, requires_grad=True)
    tss.balanced_mask_loss(logits, pseudo, labels).backward()
    assert (logits.grad[0, 1, :, 2:] < 0).all() and (logits.grad[0, 1, :, :2] > 0).all()


def test_refined_masks_are_at_image_size_without_absent_classes():
    images = torch.randn(2, 3, 32, 40)
    masks = torch.rand(2, 4, 8, 10).softmax(1)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    refined = tss.refined_masks(images, masks, labels, (1, 2), iters=3)
    assert refined.shape == (2, 4, 32, 40)
    assert (refined[0, 2] == 0).all() and (refined[1, 1] == 0).all() and (refined[1, 3] == 0).all()
    assert (refined[0, 1] > 0).all() and (refined[:, 0] > 0).all()


def test_step_adds_the_mask_loss_only_after_the_pretraining_epochs():
    net = _tiny_net().eval()
    step = tss.SingleStageStep(pretrain_epochs=2, pamr_dilations=(1, 2), pamr_iters=2)
    images, labels = torch.randn(2, 3, 64, 64), torch.tensor([[1.0, 0, 0, 0, 0], [0, 1, 1, 0, 0]])
    for epoch in (0, 1):
        loss = step(net, [images, labels], StepContext(epoch, 0, 1, 3))
        assert set(step.last) == {"cls"} and loss.item() == step.last["cls"].item()
    loss = step(net, [images, labels], StepContext(2, 0, 1, 3))
    assert set(step.last) == {"cls", "mask"}
    assert loss.item() == pytest.approx((step.last["cls"] + step.last["mask"]).item(), rel=1e-6)
    means = step.epoch_end(3, net)
    assert set(means) == {"loss_cls", "loss_mask"}
    assert step.epoch_end(4, net) == {}


def test_training_run_writes_the_model_and_both_losses(trained, toy):
    out = trained / "single_stage"
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert "loss_mask" not in records[0] and records[1]["loss_mask"] >= 0
    assert all(math.isfinite(r["loss_cls"]) for r in records)
    data = VocDataset(toy)
    # loaded the way `wsss predict` loads it
    net, meta = load_model(out / "model.pt", SEGMENTERS, data.num_classes)
    assert not net.training and meta["kind"] == "single-stage" and isinstance(net, SingleStageNet)
    image = data.read_image(data.ids("val")[0])
    with torch.no_grad():
        logits = net.segment(torch.from_numpy(normalize(image))[None])
    assert logits.shape[:2] == (1, data.num_classes)
    with pytest.raises(WsssError, match="num_classes"):
        load_model(out / "model.pt", SEGMENTERS, data.num_classes + 1)


def test_presets_fill_unset_options_and_check_dilations(toy):
    cfg = tss.TrainSingleStageConfig(data=toy, backbone="resnet38").resolved()
    assert (cfg.epochs, cfg.pretrain_epochs, cfg.lr, cfg.crop_size) == (24, 5, 1e-3, 321)
    cfg = tss.TrainSingleStageConfig(data=toy, backbone="tiny", pretrain_epochs=0,
                                     pamr_dilations=(1.0, 3.0)).resolved()
    assert cfg.pretrain_epochs == 0 and cfg.pamr_dilations == (1, 3)
    with pytest.raises(WsssError, match="pamr-dilations"):
        tss.TrainSingleStageConfig(data=toy, backbone="tiny", pamr_dilations=(1.5,)).resolved()


def _cli(*args: str):
    return CliRunner().invoke(main, ["--device", "cpu", "--quiet", "train-single-stage", *args])


def test_cli_trains_then_skips_and_rejects_a_checkpoint_of_other_classes(toy, trained, tmp_path):
    options = ["--data", str(toy), "--workdir", str(tmp_path / "w"), "--backbone", "tiny",
               "--epochs", "1", "--batch-size", "8", "--crop-size", "64", "--pretrain-epochs", "0",
               "--pamr-iters", "2", "--pamr-dilations", "1,2,4", "--workers", "0"]
    result = _cli(*options)
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("single_stage/model.pt")
    assert _cli(*options).exit_code == 0  # done with these settings: nothing to do

    # the same images with one more class name: a checkpoint to resume of the wrong class count
    other = tmp_path / "other"
    shutil.copytree(toy, other)
    classes = VocDataset(toy).classes
    (other / "classes.txt").write_text("\n".join([*classes, "extra"]) + "\n")
    workdir = tmp_path / "resume"
    (workdir / "single_stage").mkdir(parents=True)
    shutil.copy(trained / "single_stage" / "last.pt", workdir / "single_stage" / "last.pt")
    result = _cli("--data", str(other), "--workdir", str(workdir), "--backbone", "tiny",
                  "--epochs", "3", "--batch-size", "8", "--crop-size", "64", "--workers", "0",
                  "--resume")
    assert result.exit_code == 2
    assert "num_classes" in result.output
