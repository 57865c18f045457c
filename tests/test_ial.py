"""IAL (make-pseudo --method ial): region mining, the pairwise network, the round loop,
resuming after a kill in round 2."""

from __future__ import annotations

import json
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from stage_runs import GLOBAL, finished_files, invoke, spawn, stage_args

from wsss_cli import ops
from wsss_cli.cli import main
from wsss_cli.data.augment import AugmentConfig
from wsss_cli.data.dataset import VocDataset
from wsss_cli.data.io import read_id_png, read_mask, write_id_png, write_palette_png
from wsss_cli.data.loaders import RegionSet
from wsss_cli.data.toy import make_toy_dataset
from wsss_cli.errors import WsssError
from wsss_cli.inference import scores_to_label
from wsss_cli.models.backbones import build_backbone
from wsss_cli.models.pairwise import PairwiseNet
from wsss_cli.runtime import Runtime
from wsss_cli.stages.common import PerImageConfig
from wsss_cli.stages.ial_pairwise import (
    ConfidentPart,
    RefineConfig,
    gated_by_cams,
    near_boundary,
    pairwise_losses,
)
from wsss_cli.stages.ial_regions import (
    agreeing,
    pool_features,
    present_distribution,
    region_map,
    superpixel_map,
    train_region_classifier,
)
from wsss_cli.workdir import ArtifactSet, IalRound, Layout, Workdir
from wsss_cli.workflows.ial import PRESETS, SEED_PRESETS, IalConfig, class_weights, link_final

ROUNDS = 2


def test_pool_features_weights_cells_by_their_share_of_the_superpixel():
    features = np.array([[[1.0, 3.0], [5.0, 7.0]]])  # [D=1, 2, 2]: one value per 2x2 cell
    superpixels = np.zeros((4, 4), np.uint16)
    superpixels[:, 3] = 1  # superpixel 1: the right column, all in the right cells
    superpixels[0, 0] = 2  # superpixel 2: one pixel of the top-left cell
    pooled = pool_features(features, superpixels, np.array([0, 1, 2]))
    # superpixel 0: 3 pixels of cell 1.0, 2 of 3.0, 4 of 5.0, 2 of 7.0
    assert pooled[:, 0] == pytest.approx([(3 * 1 + 2 * 3 + 4 * 5 + 2 * 7) / 11, (2 * 3 + 2 * 7) / 4, 1.0])


def test_pool_features_averages_channel_groups_down_to_256():
    features = np.arange(512, dtype=np.float32)[:, None, None] * np.ones((1, 2, 2), np.float32)
    pooled = pool_features(features, np.zeros((4, 4), np.uint16), np.array([0]))
    assert pooled.shape == (1, 256) and pooled[0, :2] == pytest.approx([0.5, 2.5])


def test_superpixel_map_covers_the_image_with_about_the_asked_area():
    rng = np.random.default_rng(0)
    image = np.zeros((64, 96, 3), np.uint8)
    image[:, 48:] = 200
    image += rng.integers(0, 20, image.shape, dtype=np.uint8)
    ids = superpixel_map(image, 64)
    assert ids.dtype == np.uint16 and ids.shape == (64, 96)
    count = len(np.unique(ids))
    assert 40 <= count <= 130  # 96 asked; SLIC merges and splits some
    # no superpixel straddles the sharp edge
    assert not set(np.unique(ids[:, :46]).tolist()) & set(np.unique(ids[:, 50:]).tolist())


def test_present_distribution_keeps_background_and_the_image_classes():
    probs = torch.full((4, 2, 2), 0.25)
    out = present_distribution(probs, [2])
    assert torch.allclose(out[[0, 2]], torch.full((2, 2, 2), 0.5)) and not out[[1, 3]].any()


def test_region_map_paints_kept_superpixels_and_leaves_the_rest_unknown():
    superpixels = np.array([[0, 0, 1], [2, 2, 1]], np.uint16)
    label = region_map(superpixels, np.array([0, 1]), np.array([3, 0]))
    np.testing.assert_array_equal(label, [[3, 3, 0], [255, 255, 0]])


def test_region_classifier_drops_samples_that_look_like_another_class():
    rng = np.random.default_rng(0)
    centres = np.eye(3, 8, dtype=np.float32) * 4
    labels = rng.integers(0, 3, 600)
    features = centres[labels] + rng.normal(0, 0.5, (600, 8)).astype(np.float32)
    classifier = train_region_classifier(features, labels, 3, seed=0)
    mislabelled = {"features": (centres[[1, 2, 2]]).astype(np.float16), "labels": np.array([1, 1, 2])}
    np.testing.assert_array_equal(agreeing(classifier, mislabelled, [1, 2]), [True, False, True])
    # class 2 is not in the image: the sample that looks like it is judged among 0 and 1 only
    assert agreeing(classifier, mislabelled, [1]).tolist() == [True, True, False]


def test_untrained_pairwise_network_passes_the_unary_distribution_through():
    net = PairwiseNet(build_backbone("tiny"), 3).eval()
    unary = torch.rand(1, 3, 64, 64).softmax(1)
    with torch.no_grad():
        refined = net.refine(torch.randn(1, 3, 64, 64), unary)
    assert refined.shape == (1, 3, 16, 16)
    assert torch.allclose(refined, F.interpolate(unary, (16, 16), mode="bilinear"), atol=1e-6)


def test_pairwise_losses_supervise_only_the_known_regions_and_reach_the_gates():
    gates = torch.zeros(1, 4, 3, 2, 4, 4, requires_grad=True)
    unary = torch.tensor([0.75, 0.25])[None, :, None, None].expand(1, 2, 4, 4).contiguous()
    regions = torch.full((1, 8, 8), 255)
    regions[0, :2] = 1
    superpixels = torch.zeros(1, 8, 8, dtype=torch.long)
    region_loss, smooth_loss = pairwise_losses(gates, unary, regions, superpixels)
    assert region_loss.item() == pytest.approx(-np.log(0.25), rel=1e-5)
    # one superpixel: each pixel's in-image neighbours share weight 1; zero gates miss it all
    targets = ops.spn_gate_targets(superpixels[:, ::2, ::2])
    assert smooth_loss.item() == pytest.approx(targets.pow(2).mean().item(), rel=1e-5)
    (region_loss + smooth_loss).backward()
    assert gates.grad.abs().sum() > 0
    # class weights: a weighted mean over the known pixels (class 1 at 3, background at 1)
    regions[0, 2:4] = 0
    weighted, _ = pairwise_losses(gates, unary, regions, superpixels, torch.tensor([1.0, 3.0]))
    want = (16 * 3 * -np.log(0.25) + 16 * -np.log(0.75)) / (16 * 3 + 16)
    assert weighted.item() == pytest.approx(want, rel=1e-5)


def test_region_set_crops_regions_and_superpixel_ids_alike(tmp_path):
    make_toy_dataset(tmp_path / "toy", num_train=1, num_val=0, size=64)
    data = VocDataset(tmp_path / "toy")
    image_id = data.ids("train")[0]
    layout = Layout(tmp_path / "w")
    h, w = data.read_image(image_id).shape[:2]
    ids = (np.arange(h)[:, None] * 1000 + np.arange(w)[None] * 7).astype(np.uint16) % 60000
    write_id_png(layout.superpixels().path(image_id), ids)
    write_palette_png(layout.labels("regions").path(image_id), (ids % 5).astype(np.uint8))
    dataset = RegionSet(data, [image_id], layout.labels("regions"), layout.superpixels(),
                        AugmentConfig(crop=48, scale=(0.7, 1.3)), seed=0)
    _, regions, superpixels, present = dataset[(0, 0)]
    inside = regions != 255
    assert inside.any() and superpixels.max() > 255  # 16-bit ids survive the crop
    np.testing.assert_array_equal(regions[inside], superpixels[inside] % 5)
    assert present[0] == 1 and present.sum() == 1 + len(data.labels(image_id))


def test_final_set_refuses_to_mix_with_another_stages_labels(tmp_path):
    make_toy_dataset(tmp_path / "toy", num_train=2, num_val=0, size=48)
    workdir = tmp_path / "w"
    (workdir / "pseudo").mkdir(parents=True)
    (workdir / "pseudo" / "x.png").write_bytes(b"")
    Workdir(workdir).update_stage("random-walk", output="pseudo", status="done")
    cfg = PerImageConfig(data=tmp_path / "toy", workdir=workdir, runtime=Runtime(quiet=True))
    with pytest.raises(WsssError, match="made by 'random-walk'; pass --overwrite"):
        link_final(cfg, IalRound(1), "pseudo")


class _EraseClass:
    """A stand-in CRF that hands every pixel of channel 2 to the background."""

    def __call__(self, image: np.ndarray, probs: np.ndarray) -> np.ndarray:
        probs = probs.copy()
        probs[0] += probs[2]
        probs[2] = 0
        return probs


def test_keep_classes_restores_a_class_the_crf_erased_from_before_the_crf():
    scores = np.zeros((3, 4, 4), np.float32)
    scores[0] = 1.0
    scores[1, :, :2] = 2.0  # class 5 on the left half
    scores[2, 3, 3] = 2.0  # class 7: one pixel
    image = np.zeros((4, 4, 3), np.uint8)
    classes = np.array([5, 7])
    erased = scores_to_label(image, scores, classes, _EraseClass())
    assert not (erased == 7).any()
    kept = scores_to_label(image, scores, classes, _EraseClass(), keep_classes=True)
    assert kept[3, 3] == 7 and (kept == 7).sum() == 1
    np.testing.assert_array_equal(kept[:, :2], 5)


def test_rescue_lost_gives_a_class_the_labels_lack_the_peak_of_its_scores():
    scores = np.zeros((3, 4, 4), np.float32)
    scores[0] = 1.0
    scores[1, :, :2] = 2.0  # class 5 on the left half
    scores[2, 0, 3], scores[2, 1, 3], scores[2, 2, 3] = 0.9, 0.7, 0.5  # class 7: never the argmax
    image = np.zeros((4, 4, 3), np.uint8)
    classes = np.array([5, 7])
    plain = scores_to_label(image, scores, classes, None)
    assert not (plain == 7).any()
    rescued = scores_to_label(image, scores, classes, _EraseClass(), rescue_share=0.7)
    np.testing.assert_array_equal(np.argwhere(rescued == 7), [[0, 3], [1, 3]])  # >= 0.63
    np.testing.assert_array_equal(rescued[:, :2], 5)  # a class the labels have is left alone
    assert ((rescued == 0) == (plain == 0) & (rescued != 7)).all()
    np.testing.assert_array_equal(scores_to_label(image, scores, classes, None, rescue_share=0.7),
                                  rescued)  # without the CRF too
    # a class the map has takes nothing more
    scores[2, 3, 3] = 3.0
    assert (scores_to_label(image, scores, classes, None, rescue_share=0.7) == 7).sum() == 1


def test_supervision_keeps_the_label_pixels_of_a_class_no_confident_region_kept(tmp_path):
    regions = ArtifactSet("regions", tmp_path / "regions", ".png")
    out = ArtifactSet("sup", tmp_path / "sup", ".png")
    label = np.zeros((4, 6), np.uint8)
    label[:2, :2], label[2:, 4:] = 1, 2
    region = np.full((4, 6), 255, np.uint8)
    region[:2, :2], region[:, 2:4] = 1, 0  # class 1's object and some background; class 2 lost
    write_palette_png(regions.path("x"), region)
    image = np.zeros((4, 6, 3), np.uint8)
    ConfidentPart(regions, out)(out.path("x"), image, label)
    confident = read_mask(out.path("x"))
    assert not (confident == 2).any() and (confident == 1).sum() == 4 and (confident == 0).sum() == 8
    ConfidentPart(regions, out, keep_lost=True)(out.path("x"), image, label)
    kept = read_mask(out.path("x"))
    np.testing.assert_array_equal(kept[2:, 4:], 2)  # class 2 on its label pixels
    np.testing.assert_array_equal(np.where(label == 2, 255, kept), confident)  # the rest as before


def test_the_supervision_band_leaves_both_sides_of_a_label_boundary_unknown(tmp_path):
    regions = ArtifactSet("regions", tmp_path / "regions", ".png")
    out = ArtifactSet("sup", tmp_path / "sup", ".png")
    label = np.zeros((8, 10), np.uint8)
    label[1:7, 1:6] = 1  # a 6 x 5 object
    label[3, 8] = 2  # a one-pixel object, inside the band everywhere
    write_palette_png(regions.path("x"), label)  # every region agrees with the labels
    image = np.zeros((8, 10, 3), np.uint8)
    ConfidentPart(regions, out, band=1)(out.path("x"), image, label)
    part = read_mask(out.path("x"))
    # class 1 keeps its 4 x 3 core, the background loses its ring around the object
    np.testing.assert_array_equal(np.argwhere(part == 1).min(0), [2, 2])
    np.testing.assert_array_equal(np.argwhere(part == 1).max(0), [5, 4])
    assert (part == 1).sum() == 12 and part[7, 9] == 0
    assert part[0, 0] == part[0, 1] == part[7, 6] == 255  # the corners' squares touch it too
    assert part[1, 6] == 255 and part[1, 7] == 0  # one pixel from the object, then two
    assert not (part == 2).any() and (part[2:5, 7:10] == 255).all()
    # a class the band erases wholly is lost, so keep_lost gives it back its label pixels
    ConfidentPart(regions, out, keep_lost=True, band=1)(out.path("x"), image, label)
    kept = read_mask(out.path("x"))
    assert kept[3, 8] == 2 and (kept == 2).sum() == 1
    np.testing.assert_array_equal(np.where(label == 2, 255, kept), part)
    np.testing.assert_array_equal(near_boundary(label, 0), np.zeros_like(label, bool))


def test_class_weights_compare_each_class_share_of_labels_and_supervision(tmp_path):
    data, workdir = tmp_path / "toy", tmp_path / "w"
    make_toy_dataset(data, num_train=2, num_val=1, size=48)
    ids = VocDataset(data).ids("train")
    this = Layout(workdir).labels(IalRound(1).labels), Layout(workdir).labels(IalRound(1).supervision)
    label = np.zeros((4, 8), np.uint8)
    label[:, 4:] = 1  # 16 background, 16 class 1 pixels per image
    supervision = label.copy()
    supervision[:, 6:] = 255  # half of class 1 kept, all the background
    for image_id in ids:
        write_palette_png(this[0].path(image_id), label)
        write_palette_png(this[1].path(image_id), supervision)
    cfg = PerImageConfig(data=data, workdir=workdir)
    weights = class_weights(cfg, 1, power=2.0)
    assert weights == (1.0, 4.0, 1.0, 1.0, 1.0, 1.0)  # class 1: (2 / 1)^2; absent classes 1
    assert class_weights(cfg, 1, power=0.0) is None and class_weights(cfg, 0, power=2.0) is None
    supervision[:, :4] = 255  # no background left to weigh against
    for image_id in ids:
        write_palette_png(this[1].path(image_id), supervision)
    assert class_weights(cfg, 1, power=2.0) is None


def test_the_cam_gate_moves_a_class_to_the_background_where_its_cam_is_low():
    scores = np.array([[[0.2, 0.2, 0.2]], [[0.5, 0.5, 0.5]], [[0.3, 0.3, 0.3]]])  # bg, class 2, 5
    cam_classes = np.array([2, 4, 5])
    cams = np.array([[[1.0, 0.4, 0.1]], [[0.0, 0.0, 0.0]], [[0.1, 0.5, 2.0]]])
    gated = gated_by_cams(scores, [2, 5], cam_classes, cams, 0.3)
    # class 2 (max 1.0) is gated where its CAM < 0.3: the last pixel; class 5 (max 2.0)
    # where < 0.6: the first two
    np.testing.assert_allclose(gated, [[[0.5, 0.5, 0.7]], [[0.5, 0.5, 0.0]], [[0.0, 0.0, 0.3]]])
    assert scores[0, 0, 0] == 0.2  # the input is left as it was
    np.testing.assert_array_equal(gated_by_cams(scores, [2, 5], cam_classes, cams, 0.0), scores)


# ------------------------------------------------------------------ the round loop


def ial_args(data: Path, workdir: Path, rounds: int = ROUNDS) -> list[str]:
    return ["make-pseudo", "--method", "ial", "--data", str(data), "--workdir", str(workdir),
            "--rounds", str(rounds), "--unary-epochs", "1", "--pairwise-epochs", "1",
            "--scales", "1.0", "--crf-iters", "3", "--workers", "0"]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> tuple[Path, Path]:
    """A toy dataset and a workdir with only a trained classifier."""
    root = tmp_path_factory.mktemp("ial")
    data, workdir = root / "toy", root / "cls_only"
    make_toy_dataset(data, num_train=16, num_val=2, size=64)
    invoke(stage_args("train-cls", data, workdir))
    return data, workdir


def _copy_classifier(source: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(source, target)
    return target


@pytest.mark.integration
def test_every_round_writes_its_own_sets_and_train_seg_reads_the_last(classifier, tmp_path):
    data, cls_only = classifier
    workdir = _copy_classifier(cls_only, tmp_path / "w")
    invoke(ial_args(data, workdir))
    dataset = VocDataset(data)
    ids = dataset.ids("train")
    for k in range(ROUNDS + 1):
        for image_id in ids:
            name = IalRound(k).supervision if k == 0 else IalRound(k).labels
            label = read_mask(workdir / name / f"{image_id}.png")
            assert label.shape == dataset.read_image(image_id).shape[:2]
            allowed = {0, *dataset.labels(image_id)} | ({255} if k == 0 else set())
            assert set(np.unique(label).tolist()) <= allowed
        quality = json.loads((workdir / "eval" / f"ial_round{k}.json").read_text())
        assert 0 <= quality["supervision"]["precision"] <= 100
        assert ("miou" in quality) == ("regions" in quality) == (k > 0)
        if k > 0:  # the supervision is the round's labels where they agree with its regions
            for image_id in ids:  # off tiny's 3 px band at label boundaries, and a lost class
                supervision = read_mask(workdir / IalRound(k).supervision / f"{image_id}.png")
                regions = read_mask(workdir / IalRound(k).regions / f"{image_id}.png")
                label = read_mask(workdir / IalRound(k).labels / f"{image_id}.png")
                agreed = np.where((regions == label) & ~near_boundary(label, 3), label, 255)
                lost = np.setdiff1d(label[label > 0], agreed)
                np.testing.assert_array_equal(supervision, np.where(np.isin(label, lost), label, agreed))
    assert read_id_png(workdir / "ial" / "superpixels" / f"{ids[0]}.png").max() > 0
    # round 2's unary weighs each class by its share of round 1's labels over its confident part
    full, sampled = (sum(np.bincount(read_mask(workdir / folder / f"{i}.png").ravel(), minlength=256)
                         for i in ids)[: dataset.num_classes]
                     for folder in (IalRound(1).labels, IalRound(1).supervision))
    ratio = full / np.maximum(sampled, 1)
    # --reweight-power 2; none where the supervision has no background (1-epoch networks
    # label nearly everything an object here)
    want = np.where(sampled > 0, ratio / ratio[0], 1.0) ** 2 if sampled[0] else None
    stages = json.loads((workdir / "state.json").read_text())
    # tiny's seeds take a stronger background than PSA's alpha 4 (none was given)
    seeds = stages[f"make-aff-labels:{IalRound(0).supervision}"]["settings"]
    assert seeds["alpha_low"] == SEED_PRESETS["tiny"]["alpha_low"] < 4
    # and tiny's E-step gates each class by its CAM
    refined = stages[f"ial-refine:{IalRound(1).labels}"]["settings"]
    assert refined["cam_gate"] == PRESETS["tiny"]["cam_gate"] > 0
    assert refined["rescue_lost"] == PRESETS["tiny"]["rescue_lost"] > 0
    assert refined["supervision_band"] == PRESETS["tiny"]["supervision_band"] == 3
    weights = stages[f"train-seg:{IalRound(2).unary}"]["settings"].get("class_weights")
    if want is None:
        assert weights is None
    else:
        np.testing.assert_allclose(weights, want, atol=5e-4)
    assert stages[f"train-pairwise:{IalRound(2).pairwise}"]["settings"].get("class_weights") == weights
    assert stages[f"train-seg:{IalRound(1).unary}"]["settings"].get("class_weights") is None
    last = workdir / IalRound(ROUNDS).labels
    assert [p.read_bytes() for p in finished_files(workdir / "pseudo", ".png")] == \
        [p.read_bytes() for p in finished_files(last, ".png")]
    state = json.loads((workdir / "state.json").read_text())
    assert state["ial"]["status"] == "done" and state["ial"]["output"] == "pseudo"
    # train-seg ties its model to IAL's labels: it reads them as its input
    result = CliRunner().invoke(main, [*GLOBAL, "train-seg", "--data", str(data), "--workdir",
                                       str(workdir), "--backbone", "tiny", "--epochs", "1"])
    assert result.exit_code == 0, result.output
    settings = json.loads((workdir / "state.json").read_text())["train-seg"]["settings"]
    assert settings["input:ial"] == state["ial"]["settings_hash"]


@pytest.mark.integration
def test_killed_in_round_two_and_rerun_finishes_every_round(classifier, tmp_path):
    data, cls_only = classifier
    workdir = _copy_classifier(cls_only, tmp_path / "w")
    args = ial_args(data, workdir)
    proc = spawn(args)
    candidates = workdir / IalRound(2).candidates
    deadline = time.time() + 600
    while not finished_files(candidates, ".npz"):
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.time() < deadline
        time.sleep(0.005)
    proc.kill()
    proc.communicate()
    done_at_kill = len(finished_files(candidates, ".npz"))
    assert done_at_kill < 16
    state = json.loads((workdir / "state.json").read_text())
    assert state["ial-candidates:ial/round2/candidates"]["status"] == "running"
    assert state["train-seg:ial/round2/unary"]["status"] == "done"

    invoke(args)
    log = (candidates / "log.txt").read_text()
    assert f"{16 - done_at_kill} images to do" in log
    dataset = VocDataset(data)
    state = json.loads((workdir / "state.json").read_text())
    for k in range(1, ROUNDS + 1):
        for part in ("candidates", "regions", "labels"):
            entry = next(v for name, v in state.items() if name.endswith(f"ial/round{k}/{part}"))
            assert entry["status"] == "done" and entry["count"] == 16
        for image_id in dataset.ids("train"):
            assert read_mask(workdir / IalRound(k).labels / f"{image_id}.png").shape == \
                dataset.read_image(image_id).shape[:2]
    # the unary network of round 2 was not trained again
    assert "already trained" in (workdir / IalRound(2).unary / "log.txt").read_text()


@pytest.mark.integration
def test_more_rounds_continue_from_the_last_and_relink_the_final_set(classifier, tmp_path):
    data, cls_only = classifier
    workdir = _copy_classifier(cls_only, tmp_path / "w")
    invoke(ial_args(data, workdir, rounds=1))
    first = (workdir / IalRound(1).unary / "model.pt").read_bytes()
    invoke(ial_args(data, workdir))  # two rounds: round 1 is reused, the final set now holds round 2's labels
    assert (workdir / IalRound(1).unary / "model.pt").read_bytes() == first
    last = workdir / IalRound(ROUNDS).labels
    assert all(p.samefile(last / p.name) for p in finished_files(workdir / "pseudo", ".png"))


def test_make_pseudo_takes_ials_stage_options_from_the_stages():
    """An IAL option make-pseudo passes on has the stage's default, help and range, and its
    per-backbone default shown in --help is read from the presets."""
    ial, refine = ({f.name: f for f in fields(cls)} for cls in (IalConfig, RefineConfig))
    assert ial["keep_classes"].default == refine["keep_classes"].default
    assert ial["keep_classes"].metadata["help"].endswith(refine["keep_classes"].metadata["help"])
    assert ial["cam_gate"].default is None  # the backbone's preset decides
    assert ial["cam_gate"].metadata["click"]["max"] == refine["cam_gate"].metadata["click"]["max"]
    help_text = " ".join(CliRunner().invoke(main, ["make-pseudo", "--help"]).output.split())
    assert "its maximum; 0 = everywhere. [default: tiny: 0.05; resnet38, resnet50, resnet101, " \
           "vgg16: 0.0]" in help_text
    assert "(SLIC). [default: tiny: 64; resnet38, resnet50, resnet101, vgg16: 256]" in help_text
    assert "[default: 10 for tiny, train-seg's otherwise]" in help_text
