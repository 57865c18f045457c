"""SEC's localisation cues (``ops.sec_seeds``, ``wsss make-seeds``) and the saliency
maps they can take their background from."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from stage_runs import GLOBAL, invoke, stage_args

from wsss_cli import ops
from wsss_cli.cli import main
from wsss_cli.data.dataset import VocDataset
from wsss_cli.data.io import read_mask, write_palette_png
from wsss_cli.data.saliency import Saliency
from wsss_cli.data.toy import make_toy_dataset
from wsss_cli.walk import with_saliency
from wsss_cli.workdir import read_cams


def test_seeds_threshold_each_class_at_a_share_of_its_maximum():
    cams = np.array([[[0.0, 0.3, 1.0, 0.1]], [[0.5, 0.0, 0.05, 0.04]]], np.float32)  # [2, 1, 4]
    background = np.array([[False, False, False, True]])
    # class 3: > 0.3 of 1.0 at x = 2 only (0.3 is not above); class 5: > 0.1 at x = 0
    seeds = ops.sec_seeds(cams, np.array([3, 5]), background, fg_ratio=0.3)
    assert seeds.tolist() == [[5, 255, 3, 0]]
    silent = ops.sec_seeds(np.zeros((1, 1, 3), np.float32), np.array([2]), np.zeros((1, 3), bool))
    assert silent.tolist() == [[255, 255, 255]]  # a map that never fires seeds nothing


def test_overlapping_cues_go_to_the_smaller_one():
    cams = np.zeros((2, 1, 6), np.float32)
    cams[0, 0, :4] = 1.0  # class 1: 4 pixels
    cams[1, 0, 2:4] = 1.0  # class 2: 2 pixels, inside class 1's
    background = np.array([[False, False, False, True, True, True]])  # 3 pixels
    seeds = ops.sec_seeds(cams, np.array([1, 2]), background)
    assert seeds.tolist() == [[1, 1, 2, 2, 0, 0]]
    with pytest.raises(ValueError):
        ops.sec_seeds(cams, np.array([1]), background)


def write_saliency(dataset: VocDataset, folder, salient: int) -> None:
    """A saliency map per train image: ``salient`` on its objects, 0 on the background."""
    for image_id in dataset.ids("train"):
        write_palette_png(folder / f"{image_id}.png",
                          np.where(dataset.read_mask(image_id) == 0, 0, salient).astype(np.uint8))


@pytest.fixture(scope="module")
def with_cams(tmp_path_factory):
    root = tmp_path_factory.mktemp("seeds")
    data, work = root / "toy", root / "w"
    make_toy_dataset(data, num_train=8, num_val=2, size=48)
    invoke(stage_args("train-cls", data, work))
    invoke(stage_args("dump-cams", data, work))
    return data, work


def test_make_seeds_writes_a_seed_map_per_image(with_cams):
    data, work = with_cams
    invoke(["make-seeds", "--data", str(data), "--workdir", str(work), "--bg-threshold", "0.15"])
    dataset = VocDataset(data)
    for image_id in dataset.ids("train"):
        classes, cams = read_cams(work / "cams" / f"{image_id}.npz")
        background = (cams.max(0) if len(classes) else np.zeros(cams.shape[1:])) < 0.15
        want = ops.sec_seeds(cams, classes, background, 0.2)
        assert np.array_equal(read_mask(work / "seeds" / f"{image_id}.png"), want)


def test_saliency_folder_gives_the_background(with_cams, tmp_path):
    data, work = with_cams
    dataset = VocDataset(data)
    saliency = tmp_path / "sal"
    write_saliency(dataset, saliency, 255)  # saliency = the true objects, so bg = true background
    invoke(["make-seeds", "--data", str(data), "--workdir", str(work), "--bg-source", "saliency",
            "--saliency", str(saliency), "--out", "seeds_sal"])
    for image_id in dataset.ids("train"):
        seeds, gt = read_mask(work / "seeds_sal" / f"{image_id}.png"), dataset.read_mask(image_id)
        assert ((seeds == 0) == (gt == 0)).mean() > 0.9  # the objects' own cues may cover a bit


@pytest.mark.parametrize("problem", ["missing", "size"])
def test_a_bad_saliency_folder_is_one_line_and_writes_nothing(with_cams, tmp_path, problem):
    data, work = with_cams
    dataset = VocDataset(data)
    saliency = tmp_path / "sal"
    ids = dataset.ids("train")
    for image_id in ids:
        h, w = dataset.read_mask(image_id).shape
        write_palette_png(saliency / f"{image_id}.png", np.zeros((h, w), np.uint8))
    bad = saliency / f"{ids[3]}.png"
    if problem == "missing":
        bad.unlink()
    else:
        write_palette_png(bad, np.zeros((5, 7), np.uint8))
    result = CliRunner().invoke(main, [*GLOBAL, "make-seeds", "--data", str(data), "--workdir",
                                       str(work), "--bg-source", "saliency", "--saliency",
                                       str(saliency), "--out", f"seeds_{problem}"])
    assert result.exit_code == 2 and str(bad) in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (work / f"seeds_{problem}").exists()


def test_make_aff_labels_takes_its_confident_background_from_saliency(with_cams, tmp_path):
    data, work = with_cams
    dataset = VocDataset(data)
    saliency = tmp_path / "sal"
    write_saliency(dataset, saliency, 200)
    invoke(["make-aff-labels", "--data", str(data), "--workdir", str(work), "--crf-iters", "3",
            "--saliency", str(saliency), "--out", "aff_sal"])
    for image_id in dataset.ids("train"):
        label, gt = read_mask(work / "aff_sal" / f"{image_id}.png"), dataset.read_mask(image_id)
        if dataset.labels(image_id):
            assert np.array_equal(label == 0, gt == 0)  # background exactly where saliency is low
    bad = tmp_path / "empty"
    bad.mkdir()
    result = CliRunner().invoke(main, [*GLOBAL, "make-aff-labels", "--data", str(data),
                                       "--workdir", str(work), "--saliency", str(bad), "--out",
                                       "aff_bad"])
    assert result.exit_code == 2 and "saliency map missing" in result.output
    assert not (work / "aff_bad").exists()


def test_saliency_scales_the_walked_background_around_one_half():
    scores = np.full((2, 1, 3), 0.6, np.float32)
    scaled = with_saliency(scores, np.array([[0.0, 0.5, 1.0]], np.float32), power=2)
    np.testing.assert_allclose(scaled[0, 0], [0.6 * 4, 0.6, 0.0])
    np.testing.assert_array_equal(scaled[1], scores[1])  # the classes are left alone
    np.testing.assert_array_equal(scores[0], np.float32(0.6))  # the input is not changed


def test_random_walk_takes_where_objects_are_from_saliency(with_cams, tmp_path):
    data, work = with_cams
    dataset = VocDataset(data)
    invoke(stage_args("make-aff-labels", data, work))
    invoke(stage_args("train-aff", data, work))
    saliency = tmp_path / "sal"
    write_saliency(dataset, saliency, 255)
    # power 8: the background is 256 x 0.6 where saliency is 0 and nothing where it is 1
    invoke([*stage_args("random-walk", data, work), "--no-crf", "--saliency", str(saliency),
            "--saliency-power", "8", "--out", "pseudo_sal"])
    invoke([*stage_args("random-walk", data, work), "--no-crf", "--out", "pseudo_plain"])
    found = {"pseudo_sal": [], "pseudo_plain": []}
    for image_id in dataset.ids("train"):
        gt = dataset.read_mask(image_id)
        assert (read_mask(work / "pseudo_sal" / f"{image_id}.png")[gt == 0] == 0).all()
        for name, pixels in found.items():
            pixels.append(read_mask(work / name / f"{image_id}.png")[gt != 0] != 0)
    # on the objects, any walked CAM above zero now beats the background
    assert np.concatenate(found["pseudo_sal"]).mean() > np.concatenate(found["pseudo_plain"]).mean() + 0.2
    # an AffinityNet trained on labels made with saliency walks with the same maps
    invoke([*stage_args("make-aff-labels", data, work), "--saliency", str(saliency), "--out",
            "aff_labels_sal"])
    invoke([*stage_args("train-aff", data, work), "--aff-labels", "aff_labels_sal", "--out", "aff_sal"])
    invoke([*stage_args("random-walk", data, work), "--aff-model", str(work / "aff_sal/model.pt"),
            "--out", "pseudo_learnt"])
    state = json.loads((work / "state.json").read_text())
    assert state["random-walk:pseudo_learnt"]["settings"]["saliency"] == str(saliency)
    assert state["random-walk:pseudo_plain"]["settings"].get("saliency") is None
    (saliency / f"{dataset.ids('train')[2]}.png").unlink()
    result = CliRunner().invoke(main, [*GLOBAL, *stage_args("random-walk", data, work), "--saliency",
                                       str(saliency), "--out", "pseudo_bad"])
    assert result.exit_code == 2 and "saliency map missing" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (work / "pseudo_bad").exists()


@pytest.mark.parametrize("source", ["spectral", "fine-grained"])
def test_built_in_saliency_finds_the_objects_of_real_photos(coco128, source):
    data, saliency = VocDataset(coco128), Saliency(source)
    brighter = []
    for image_id in data.ids("train")[:30]:
        image, gt = data.read_image(image_id), data.read_mask(image_id)
        found = saliency(image_id, image)
        assert found.shape == gt.shape and found.dtype == np.float32
        assert 0 <= found.min() and found.max() <= 1
        objects = (gt > 0) & (gt < 255)
        if objects.any() and (gt == 0).any():
            brighter.append(found[objects].mean() > found[gt == 0].mean())
    assert np.mean(brighter) > 0.65  # measured: 0.73 spectral, 0.77 fine-grained


def test_make_seeds_with_opencv_saliency_writes_every_map(with_cams):
    data, work = with_cams
    invoke(["make-seeds", "--data", str(data), "--workdir", str(work), "--bg-source", "saliency",
            "--saliency", "spectral", "--out", "seeds_spectral"])
    for image_id in VocDataset(data).ids("train"):
        seeds = read_mask(work / "seeds_spectral" / f"{image_id}.png")
        assert (seeds == 0).any() and (seeds == 255).any()
