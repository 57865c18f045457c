"""The CAM-expansion methods of the survey (Hide-and-Seek, ACoL, adversarial erasing, MDC,
mixup): their tensor operations on hand-made cases, their networks' shapes and erasing,
a two-epoch run of each on the toy set, and ``wsss compare``."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from stage_runs import GLOBAL, TINY_TRAINING, invoke
from torch import nn

from wsss_cli import ops
from wsss_cli.cam_methods import CAM_METHODS, erasing
from wsss_cli.cli import main
from wsss_cli.data.augment import erase_pixels, normalize
from wsss_cli.data.dataset import VocDataset
from wsss_cli.data.io import read_mask
from wsss_cli.data.toy import make_toy_dataset
from wsss_cli.evaluation import ThresholdSweep, foreground_quality
from wsss_cli.models.acol import AcolNet
from wsss_cli.models.backbones import build_backbone
from wsss_cli.models.classifier import CamNet
from wsss_cli.models.erasing import ErasingNet
from wsss_cli.models.mdc import MdcNet
from wsss_cli.options import settings_of
from wsss_cli.stages.common import method_defaults
from wsss_cli.stages.train_cls import TrainClsConfig, with_batch_augmentation
from wsss_cli.training import StepContext, load_checkpoint
from wsss_cli.workdir import Workdir, read_cams

# ------------------------------------------------------------------ ops


def test_hide_patches_hides_whole_cells_and_nothing_else():
    images = torch.arange(1, 2 * 3 * 7 * 5 + 1, dtype=torch.float32).reshape(2, 3, 7, 5)
    hidden = ops.hide_patches(images, np.random.default_rng(0), grid_sizes=(3,), prob=0.5)
    keep = hidden[:, 0] != 0
    assert torch.equal(hidden[:, :, :, :][keep.unsqueeze(1).expand_as(hidden)],
                       images[keep.unsqueeze(1).expand_as(images)])
    for image in keep:  # 3 x 3 cells from the top-left corner, the last ones cut short
        for top in range(0, 7, 3):
            for left in range(0, 5, 3):
                cell = image[top:top + 3, left:left + 3]
                assert cell.all() or not cell.any()
    assert (hidden[:, 0] == 0).any() and keep.any()


def test_hide_patches_edge_cases():
    images = torch.ones(4, 3, 8, 8)
    rng = np.random.default_rng(1)
    assert torch.equal(ops.hide_patches(images, rng, grid_sizes=(0,)), images)
    assert torch.equal(ops.hide_patches(images, rng, grid_sizes=(4,), prob=0.0), images)
    assert not ops.hide_patches(images, rng, grid_sizes=(4,), prob=1.0).any()
    many = ops.hide_patches(torch.ones(200, 1, 4, 4), rng, grid_sizes=(1,), prob=0.5)
    assert 0.45 < float((many == 0).float().mean()) < 0.55
    assert ops.scaled_grid_sizes(224) == (0, 16, 32, 44, 56)
    assert ops.scaled_grid_sizes(128) == (0, 9, 18, 25, 32)
    with pytest.raises(ValueError):
        ops.hide_patches(images, rng, prob=1.5)


def test_erase_by_maps_zeroes_where_a_labelled_class_is_high():
    maps = torch.zeros(1, 2, 2, 3)
    maps[0, 0] = torch.tensor([[0.0, 5.0, 10.0], [2.0, 6.5, 7.0]])  # normalised: 0 .5 1 / .2 .65 .7
    maps[0, 1] = torch.tensor([[10.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    features = torch.ones(1, 4, 2, 3, requires_grad=True)
    only_0 = ops.erase_by_maps(features, maps, torch.tensor([[1.0, 0.0]]), threshold=0.6)
    want = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert torch.equal(only_0[0, 0].detach(), want)
    both = ops.erase_by_maps(features, maps, torch.tensor([[1.0, 1.0]]), threshold=0.6)
    assert torch.equal(both[0, 3].detach(), torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))
    both.sum().backward()
    assert torch.equal(features.grad[0, 0], torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))


def test_predicted_classes_and_region_mask():
    logits = torch.tensor([[-1.0, 2.0, 3.0], [-1.0, -2.0, -0.5]])
    assert torch.equal(ops.predicted_classes(logits), torch.tensor([[0.0, 1.0, 1.0], [0.0, 0.0, 1.0]]))
    normed = torch.tensor([[[[0.2, 0.9]], [[0.8, 0.1]]]])  # [1, 2, 1, 2]
    assert torch.equal(ops.region_mask(normed, torch.tensor([[1.0, 0.0]]), 0.5),
                       torch.tensor([[[[0.0, 1.0]]]]))
    assert torch.equal(ops.region_mask(normed, torch.tensor([[1.0, 1.0]]), 0.5),
                       torch.tensor([[[[1.0, 1.0]]]]))


def test_mixup_mixes_images_and_labels_with_one_weight():
    images = torch.arange(4, dtype=torch.float32).reshape(4, 1, 1, 1).expand(4, 3, 2, 2)
    labels = torch.eye(4)
    mixed, mixed_labels = ops.mixup(images, labels, np.random.default_rng(3), alpha=1.0)
    check = np.random.default_rng(3)
    lam, order = check.beta(1.0, 1.0), check.permutation(4)
    assert torch.allclose(mixed[:, 0, 0, 0], lam * torch.arange(4.0) + (1 - lam) * torch.tensor(
        order, dtype=torch.float32))
    assert torch.allclose(mixed_labels, lam * labels + (1 - lam) * labels[order])
    assert torch.allclose(mixed_labels.sum(1), torch.ones(4))
    with pytest.raises(ValueError):
        ops.mixup(images, labels, check, alpha=0.0)


def test_erased_pixels_become_zero_once_normalised():
    image = np.full((4, 5, 3), 200, np.uint8)
    mask = np.zeros((4, 5), bool)
    mask[1:3, 2:] = True
    out = normalize(erase_pixels(image, mask))
    assert np.abs(out[..., mask]).max() < 0.01 and np.abs(out[..., ~mask]).min() > 0.5
    assert (image == 200).all()  # the input is not changed


def test_batch_augmentation_hides_and_mixes_as_configured(tmp_path):
    seen = []

    def loss(net, batch, ctx):
        seen.append(batch)
        return torch.zeros(())

    cfg = TrainClsConfig(data=tmp_path, workdir=tmp_path, backbone="tiny", crop_size=64)
    assert with_batch_augmentation(loss, cfg) is loss
    ctx = StepContext(epoch=0, step=0, steps_per_epoch=1, epochs=1)
    images, labels = torch.ones(16, 3, 64, 64), torch.eye(5)[torch.arange(16) % 5]
    with_batch_augmentation(loss, TrainClsConfig(**{**vars(cfg), "hide_and_seek": True}))(
        None, [images, labels], ctx)
    with_batch_augmentation(loss, TrainClsConfig(**{**vars(cfg), "mixup": 1.0}))(
        None, [images, labels], ctx)
    hidden, mixed = seen
    assert (hidden[0] == 0).any() and torch.equal(hidden[1], labels)
    assert not torch.equal(mixed[1], labels) and torch.allclose(mixed[1].sum(1), labels.sum(1))


# ------------------------------------------------------------------ networks


def test_acol_head_b_sees_the_features_head_a_leaves():
    torch.manual_seed(0)
    net = AcolNet(build_backbone("tiny"), 3, width=16, threshold=0.6).eval()
    x, labels = torch.randn(2, 3, 64, 64), torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    seen = {}
    net.head_b.register_forward_hook(lambda m, inputs, out: seen.update(b=inputs[0]))
    logits_a, logits_b = net(x, labels)
    assert logits_a.shape == logits_b.shape == (2, 3)
    map_a = net.head_a(net.backbone(x)[-1])
    erased = ops.region_mask(ops.minmax_normalize(map_a), labels, 0.6)[:, 0] > 0
    assert erased.any() and (seen["b"].abs().sum(1)[erased] == 0).all()
    cams = net.cams(x)
    assert cams.shape == (2, 3, 8, 8) and cams.min() >= 0 and cams.max() <= 1


def test_acol_from_scratch_trains_its_heads_at_the_base_rate(tmp_path):
    acol = CAM_METHODS.get("acol")
    scratch = TrainClsConfig(data=tmp_path, workdir=tmp_path, backbone="tiny", method="acol")
    scratch = scratch.resolved()
    assert scratch.lr == 1e-3 and scratch.pretrained == "none"
    assert acol.configured(scratch).head_lr_mult == 1.0
    assert acol.configured(scratch).width == 128
    imagenet = TrainClsConfig(data=tmp_path, workdir=tmp_path, backbone="resnet50", method="acol")
    configured = acol.configured(imagenet.resolved())
    assert configured.head_lr_mult is None and configured.width == 1024  # the loop's 10x


def test_mdc_map_is_the_first_rate_plus_the_mean_of_the_others():
    torch.manual_seed(0)
    net = MdcNet(build_backbone("tiny"), 4, rates=(1, 3, 6)).eval()
    x = torch.randn(1, 3, 64, 64)
    assert net(x).shape == (3, 1, 4)
    maps = F.relu(net.maps(x))
    assert torch.allclose(net.cams(x), maps[0] + (maps[1] + maps[2]) / 2)
    assert [b.dilation for b in net.branches] == [(1, 1), (3, 3), (6, 6)]


def test_erasing_net_feeds_each_step_the_image_the_earlier_steps_erased():
    torch.manual_seed(0)
    steps = [CamNet(build_backbone("tiny"), 2).eval() for _ in range(2)]
    net = ErasingNet(steps, threshold=0.5)
    x = torch.randn(1, 3, 64, 64)
    seen = {}
    steps[1].backbone.register_forward_hook(lambda m, inputs, out: seen.update(x=inputs[0]))
    fused = net.cams(x)
    normed = steps[0].cams(x) / (steps[0].cams(x).amax(dim=(2, 3), keepdim=True) + 1e-5)
    mask = ops.region_mask(normed, ops.predicted_classes(steps[0](x)), 0.5)
    mask = F.interpolate(mask, (64, 64), mode="nearest")[0, 0] > 0
    assert mask.any() and (seen["x"][0, :, mask] == 0).all()
    assert torch.equal(seen["x"][0, :, ~mask], x[0, :, ~mask])
    assert fused.shape == (1, 2, 8, 8) and torch.all(fused >= normed - 1e-6)


class _FixedMaps(nn.Module):
    """A step stub: the same CAMs ``[1, 1, 8, 8]`` whatever it sees, class 0 present."""

    def __init__(self, maps: torch.Tensor):
        super().__init__()
        self.maps = maps

    def cams(self, x: torch.Tensor) -> torch.Tensor:
        return self.maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ones(1, 1)


def test_a_later_steps_map_counts_only_within_reach_of_the_erased_regions():
    first, second = torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8)
    first[0, 0, 1, 1] = 1.0  # step 1 erases position (1, 1) alone (>= 0.5 of its max)
    second[0, 0, 1, 2], second[0, 0, 1, 3], second[0, 0, 6, 6] = 0.8, 0.6, 1.0
    net = ErasingNet([_FixedMaps(first), _FixedMaps(second)], threshold=0.5)
    x = torch.zeros(1, 3, 64, 64)
    everywhere = net.cams(x, reach=-1)  # AE-PSL's max
    assert torch.allclose(everywhere, torch.maximum(first, second), atol=1e-4)
    near = net.cams(x, reach=1)  # (1, 2) is next to (1, 1); (1, 3) and (6, 6) are not
    assert near[0, 0, 1, 2] == pytest.approx(0.8, abs=1e-4)
    assert near[0, 0, 1, 3] == 0 and near[0, 0, 6, 6] == 0
    assert near[0, 0, 1, 1] == pytest.approx(1.0, abs=1e-4)
    assert net.cams(x, reach=2)[0, 0, 1, 3] == pytest.approx(0.6, abs=1e-4)
    assert torch.equal(net.cams(x, reach=0), first / (1 + 1e-5))


def test_erase_reach_is_tinys_default_in_dump_cams_and_configures_the_reader():
    assert method_defaults("erasing", "tiny", "dump-cams") == {"erase_reach": erasing.TINY_REACH}
    assert method_defaults("erasing", "resnet38", "dump-cams") == {}
    reader = CAM_METHODS.get("erasing").configured(SimpleNamespace(erase_reach=0))
    assert reader.reach == 0
    assert CAM_METHODS.get("erasing").configured(SimpleNamespace()).reach == -1


# ------------------------------------------------------------------ evaluation


def test_foreground_quality_of_a_hand_made_confusion():
    confusion = np.array([[50, 10, 0], [5, 20, 5], [5, 0, 5]])  # [truth, prediction]
    # marked fg: 10 + 20 + 5 + 0 + 5 = 40, of it truly fg 30; fg pixels 40, marked 30
    assert foreground_quality(confusion) == {"fg_precision": 75.0, "fg_recall": 75.0}


def test_otsu_threshold_splits_two_modes():
    sweep = ThresholdSweep([round(0.01 * i, 2) for i in range(96)], 2)
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.normal(0.15, 0.04, 4000), rng.normal(0.75, 0.05, 1000)])
    cams = np.clip(scores, 0, 1).reshape(1, 50, 100).astype(np.float32)
    sweep.add(np.zeros((50, 100), np.uint8), cams, np.array([1]))
    threshold = sweep.thresholds[sweep.otsu_index()]
    assert 0.25 <= threshold <= 0.6  # in the gap: each mode on its own side
    assert abs(float((cams > threshold).mean()) - 0.2) < 0.005
    empty = ThresholdSweep([0.1, 0.2], 2)
    assert empty.otsu_index() is None


# ------------------------------------------------------------------ two epochs on the toy set


def _train(data, work, *extra):
    invoke(["train-cls", "--data", str(data), "--workdir", str(work), *TINY_TRAINING,
            "--epochs", "2", "--crop-size", "64", *extra])


def _dump(data, work, name):
    invoke(["dump-cams", "--data", str(data), "--workdir", str(work), "--scales", "1.0,0.5",
            "--workers", "0", "--cls-model", str(work / f"cls_{name}/model.pt"), "--out",
            f"cams_{name}"])


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    data = tmp_path_factory.mktemp("erasing") / "toy"
    make_toy_dataset(data, num_train=12, num_val=2, size=64)
    return data


@pytest.mark.parametrize("method, extra, options", [
    ("has", [], {}),
    ("acol", ["--acol-threshold", "0.7"], {"acol_threshold": 0.7, "acol_width": 128}),
    ("mdc", ["--mdc-rates", "1,2,4"], {"mdc_rates": [1, 2, 4]}),
    ("cam", ["--mixup", "0.4"], {}),
])
def test_a_method_trains_two_epochs_and_dumps_every_image(toy, tmp_path, method, extra, options):
    work = tmp_path / "w"
    _train(toy, work, "--method", method, "--out", f"cls_{method}", *extra)
    _dump(toy, work, method)
    meta = load_checkpoint(work / f"cls_{method}/model.pt")["meta"]
    assert meta["method"] == method and meta["method_options"] == options
    data = VocDataset(toy)
    for image_id in data.ids("train"):
        classes, cams = read_cams(work / f"cams_{method}/{image_id}.npz")
        assert list(classes) == data.labels(image_id)
        assert cams.shape == (len(classes), *read_mask(toy / f"SegmentationClass/{image_id}.png").shape)
        assert np.isfinite(cams).all() and cams.min() >= 0 and cams.max() <= 1
    settings = json.dumps(Workdir(work).state()[f"train-cls:cls_{method}"])
    assert settings  # the run is recorded under its own entry
    config = (work / "config.toml").read_text()
    if method == "has":
        assert "hide_and_seek = true" in config


def test_adversarial_erasing_steps_are_cached_runs_of_their_own(toy, tmp_path):
    work = tmp_path / "w"
    _train(toy, work, "--method", "erasing", "--erase-steps", "2", "--out", "cls_erasing")
    step1 = work / "cls_erasing/step1/model.pt"
    first = step1.stat().st_mtime_ns
    data = VocDataset(toy)
    ids = data.ids("train")
    regions = [read_mask(work / f"cls_erasing/step1/erased/{i}.png") for i in ids]
    assert all(set(np.unique(r)) <= {0, 1} for r in regions)
    assert any(r.any() for r in regions) and not all(r.all() for r in regions)
    meta = load_checkpoint(work / "cls_erasing/model.pt")["meta"]
    assert meta["method"] == "erasing" and meta["method_options"]["erase_steps"] == 2
    # a third step reuses the two trained ones and mines the second's regions
    _train(toy, work, "--method", "erasing", "--erase-steps", "3", "--out", "cls_erasing")
    assert step1.stat().st_mtime_ns == first
    for image_id, before in zip(ids, regions, strict=True):
        after = read_mask(work / f"cls_erasing/step2/erased/{image_id}.png")
        assert (after >= before).all()  # the union grows
    _dump(toy, work, "erasing")
    assert len(list((work / "cams_erasing").glob("*.npz"))) == len(ids)
    state = Workdir(work).state()
    assert {"train-cls:cls_erasing/step3", "erasing-regions:cls_erasing/step2/erased"} <= set(state)
    # tiny's reach is in the CAMs' settings: sets made without it are not taken for these
    assert state["dump-cams:cams_erasing"]["settings"]["erase_reach"] == erasing.TINY_REACH


# ------------------------------------------------------------------ compare


def test_compare_prints_one_table_and_writes_its_json(toy, tmp_path):
    work = tmp_path / "w"
    result = CliRunner().invoke(main, [*GLOBAL, "compare", "--data", str(toy), "--workdir",
                                       str(work), "--methods", "cam,mixup", "--backbone", "tiny",
                                       "--epochs", "1", "--batch-size", "4", "--scales", "1.0",
                                       "--workers", "0"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:3] == ["method", "best", "thr"]
    assert [line.split()[0] for line in lines[2:4]] == ["cam", "mixup"]
    table = json.loads((work / "eval/compare_train.json").read_text())
    assert [r["method"] for r in table["methods"]] == ["cam", "mixup"]
    for row in table["methods"]:
        assert 0 <= row["best"]["miou"] <= 100 and row["train_seconds"] > 0
        assert row["otsu"]["miou"] <= row["best"]["miou"]
        assert (work / f"eval/cams_{row['method']}_train.json").is_file()
    assert load_checkpoint(work / "cls_mixup/model.pt")["meta"]["method"] == "cam"
    assert "mixup = 1.0" in (work / "config.toml").read_text()


def test_compare_refuses_an_unknown_method_in_one_line(toy, tmp_path):
    result = CliRunner().invoke(main, [*GLOBAL, "compare", "--data", str(toy), "--workdir",
                                       str(tmp_path / "w"), "--methods", "cam,nope"])
    assert result.exit_code == 2
    assert "unknown nope" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "w").exists()


def test_mdc_rates_must_be_integers(toy, tmp_path):
    result = CliRunner().invoke(main, [*GLOBAL, "train-cls", "--data", str(toy), "--workdir",
                                       str(tmp_path / "w"), "--method", "mdc", "--mdc-rates", "1,2.5"])
    assert result.exit_code == 2 and "ints" in result.output


def test_erasing_threshold_default_is_filled_in_and_hashed(tmp_path):
    cfg = TrainClsConfig(data=tmp_path, workdir=tmp_path, method="erasing", backbone="tiny").resolved()
    # in the settings, so a run made when the default was 0.5 (hashed without it) is not reused
    assert cfg.erase_threshold == 0.8 and settings_of(cfg)["erase_threshold"] == 0.8
    plain = TrainClsConfig(data=tmp_path, workdir=tmp_path, method="cam", backbone="tiny").resolved()
    assert "erase_threshold" not in settings_of(plain)
