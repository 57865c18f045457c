"""diagnose: each link measured against ground truth, numbers checked independently."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from stage_runs import GLOBAL, build_reference, invoke, stage_args

from wsss_cli.cli import main
from wsss_cli.data.dataset import VocDataset
from wsss_cli.data.io import read_mask, write_palette_png
from wsss_cli.evaluation import evaluate_folder, iou_summary
from wsss_cli.ops import confusion_matrix
from wsss_cli.runtime import Runtime
from wsss_cli.stages.diagnose import _auc
from wsss_cli.workdir import read_cams


def test_auc_of_histograms():
    separated = np.array([[5, 3, 0, 0], [0, 0, 2, 7]])
    assert _auc(separated) == 100.0
    assert _auc(separated[::-1]) == 0.0
    assert _auc(np.array([[1, 1, 1, 1], [2, 2, 2, 2]])) == 50.0  # same distribution, ties half
    assert _auc(np.array([[0, 0], [1, 1]])) is None


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    data, workdir = build_reference(tmp_path_factory.mktemp("diagnose"))
    invoke([*stage_args("random-walk", data, workdir), "--no-crf", "--out", "pseudo_nocrf"])
    return data, workdir


def test_diagnose_measures_every_link(reference, tmp_path):
    data, workdir = reference
    work = tmp_path / "w"
    shutil.copytree(workdir, work)
    dataset = VocDataset(data)
    ids = dataset.ids("train")
    # affinity labels made from the ground truth: right where confident, a known share unsure
    unsure = fg = 0
    for image_id in ids:
        gt = dataset.read_mask(image_id)
        label = gt.copy()
        label[::4] = 255
        write_palette_png(work / "aff_labels" / f"{image_id}.png", label)
        valid = gt != 255
        unsure += (valid & (label == 255)).sum()
        fg += (valid & (label != 0) & (label != 255)).sum()
    invoke(["diagnose", "--data", str(data), "--workdir", str(work), "--crf-iters", "5"])
    result = json.loads((work / "eval/diagnose_train.json").read_text())
    total = sum((dataset.read_mask(i) != 255).sum() for i in ids)

    aff = result["affinity_labels"]
    assert aff["foreground_precision"] == 100.0 and aff["background_precision"] == 100.0
    assert aff["unsure_share"] == pytest.approx(100 * unsure / total, abs=0.01)
    assert aff["foreground_share"] == pytest.approx(100 * fg / total, abs=0.01)
    net = result["affinity_net"]
    assert 0 <= net["auc"] <= 100 and set(net["auc_by_distance"]) <= {"1", "2", "3", "4", "5"}
    assert net["pairs"]["same_class"] > net["pairs"]["different_class"] > 0

    chain = result["chain"]
    assert list(chain) == ["CAM", "CAM + CRF", "walk", "walk + CRF"]
    # the walk's start is random-walk's: the tiny preset's constant background 0.6
    assert result["start"] == "[0.6, CAMs / max], CRF on scores^4"
    confusion = 0
    for image_id in ids:
        classes, cams = read_cams(work / "cams" / f"{image_id}.npz")
        peaks = np.maximum(cams.max(axis=(1, 2)), 1e-5)[:, None, None]  # as random-walk
        scores = np.concatenate([np.full((1, *cams.shape[1:]), 0.6), cams / peaks])
        pred = np.concatenate([[0], classes])[scores.argmax(axis=0)]
        confusion = confusion + confusion_matrix(pred, dataset.read_mask(image_id), dataset.num_classes)
    assert chain["CAM"]["miou"] == iou_summary(confusion, dataset.classes)["miou"]
    for link, folder in (("walk", "pseudo_nocrf"), ("walk + CRF", "pseudo")):
        want = evaluate_folder(work / folder, data / "SegmentationClass", ids, dataset.classes,
                               Runtime(quiet=True))
        assert chain[link]["miou"] == pytest.approx(want["miou"], abs=1e-6)
    # inside / outside objects, counted independently for the pseudo-labels
    inside = outside = objects = background = 0
    for image_id in ids:
        gt, pred = dataset.read_mask(image_id), read_mask(work / "pseudo" / f"{image_id}.png")
        objects += ((gt != 0) & (gt != 255)).sum()
        background += (gt == 0).sum()
        inside += ((gt != 0) & (gt != 255) & (pred == gt)).sum()
        outside += ((gt == 0) & (pred != 0)).sum()
    assert chain["walk + CRF"]["inside_objects"] == pytest.approx(100 * inside / objects, abs=0.01)
    assert chain["walk + CRF"]["outside_objects"] == pytest.approx(100 * outside / background, abs=0.01)


def test_diagnose_needs_ground_truth(reference, tmp_path):
    data, workdir = reference
    bare = tmp_path / "toy"
    shutil.copytree(data, bare)
    shutil.rmtree(bare / "SegmentationClass")
    (bare / "cls_labels.json").write_text(json.dumps({i: VocDataset(data).labels(i)
                                                      for i in VocDataset(data).ids("train")}))
    from click.testing import CliRunner

    from wsss_cli.cli import main

    result = CliRunner().invoke(main, ["diagnose", "--data", str(bare), "--workdir", str(workdir)])
    assert result.exit_code == 2 and "needs ground-truth masks" in result.output


def test_one_walk_writes_the_labels_with_and_without_crf(reference, tmp_path):
    data, workdir = reference
    work = tmp_path / "w"
    shutil.copytree(workdir, work)
    invoke([*stage_args("random-walk", data, work), "--out", "both", "--no-crf-out", "both_nocrf"])
    for name, separate in (("both", "pseudo"), ("both_nocrf", "pseudo_nocrf")):
        files = sorted((work / name).glob("*.png"))
        assert [p.name for p in files] == sorted(p.name for p in (workdir / separate).glob("*.png"))
        for path in files:  # the same labels as the two separate walks
            np.testing.assert_array_equal(read_mask(path), read_mask(workdir / separate / path.name))
    state = json.loads((work / "state.json").read_text())
    assert state["random-walk:both"]["also_writes"] == ["both_nocrf"]
    result = CliRunner().invoke(main, [*GLOBAL, *stage_args("random-walk", data, work), "--no-crf",
                                       "--out", "x", "--no-crf-out", "y"])
    assert result.exit_code == 2 and "--no-crf-out" in result.output
    assert not (work / "x").exists() and not (work / "y").exists()
