"""The stages on small real runs: train-cls, dump-cams, eval-cams, resume, NaN guard."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from wsss_cli.cam_methods import cam
from wsss_cli.data.dataset import VocDataset
from wsss_cli.data.io import read_mask
from wsss_cli.data.toy import make_toy_dataset
from wsss_cli.errors import WsssError
from wsss_cli.inference import write_labels
from wsss_cli.runtime import Runtime
from wsss_cli.stages import dump_cams, eval_cams, train_cls
from wsss_cli.workdir import read_cams

QUIET = Runtime(device="cpu", quiet=True)


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("toy")
    make_toy_dataset(root, num_train=32, num_val=4, size=64)
    return root


def _cls_config(toy: Path, workdir: Path, **kw) -> train_cls.TrainClsConfig:
    options = dict(backbone="tiny", epochs=2, batch_size=8, crop_size=64, resize_long=(48, 80),
                   workers=0, runtime=QUIET)
    return train_cls.TrainClsConfig(data=toy, workdir=workdir, **{**options, **kw})


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_killed_run_resumed_ends_with_the_same_weights(toy, tmp_path):
    """A 2-epoch run killed (SIGKILL) after epoch 1 and resumed equals an uninterrupted one."""
    straight = train_cls.run(_cls_config(toy, tmp_path / "a"))
    workdir = tmp_path / "b"
    args = ["train-cls", "--data", str(toy), "--workdir", str(workdir), "--backbone", "tiny",
            "--epochs", "2", "--batch-size", "8", "--crop-size", "64", "--resize-long", "48", "80",
            "--workers", "0"]
    proc = subprocess.Popen([sys.executable, "-m", "wsss_cli", "--device", "cpu", "--quiet", *args])
    metrics = workdir / "cls" / "metrics.jsonl"
    deadline = time.time() + 300
    while not (metrics.exists() and metrics.read_text().strip()) and proc.poll() is None:
        assert time.time() < deadline
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert torch.load(workdir / "cls/last.pt", weights_only=True)["epoch"] == 1
    assert not (workdir / "cls/model.pt").exists()
    resumed = train_cls.run(_cls_config(toy, workdir, resume=True))
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    lines = metrics.read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]


def test_nan_loss_stops_with_the_step_and_keeps_the_checkpoint(toy, tmp_path, monkeypatch):
    calls = []
    real_loss = cam.F.multilabel_soft_margin_loss

    def loss_that_breaks(logits, labels):
        calls.append(1)
        loss = real_loss(logits, labels)
        return loss * float("nan") if len(calls) == 6 else loss  # epoch 2, step 6

    monkeypatch.setattr(cam.F, "multilabel_soft_margin_loss", loss_that_breaks)
    with pytest.raises(WsssError, match=r"loss became nan at epoch 2 step 6"):
        train_cls.run(_cls_config(toy, tmp_path, epochs=3))
    last = torch.load(tmp_path / "cls/last.pt", weights_only=True)
    assert last["epoch"] == 1
    assert all(torch.isfinite(v.float()).all() for v in last["model"].values())
    assert not (tmp_path / "cls/model.pt").exists()
    state = json.loads((tmp_path / "state.json").read_text())["train-cls"]
    assert state["status"] == "failed" and "loss became nan" in state["error"]


def test_changed_settings_need_overwrite_and_finished_runs_are_skipped(toy, tmp_path):
    model = train_cls.run(_cls_config(toy, tmp_path, epochs=1))
    stamp = model.stat().st_mtime_ns
    assert train_cls.run(_cls_config(toy, tmp_path, epochs=1)).stat().st_mtime_ns == stamp
    with pytest.raises(WsssError, match="--overwrite"):
        train_cls.run(_cls_config(toy, tmp_path, epochs=2))


def test_dump_cams_shards_union_equals_one_run_and_eval(toy, tmp_path):
    train_cls.run(_cls_config(toy, tmp_path, epochs=1))
    cfg = dict(data=toy, workdir=tmp_path, scales=(1.0, 0.5), workers=0, runtime=QUIET)
    for shard in ("0/2", "1/2"):
        dump_cams.run(dump_cams.DumpCamsConfig(**cfg, shard=shard))
    data = VocDataset(toy)
    for image_id in data.ids("train"):
        classes, cams = read_cams(tmp_path / "cams" / f"{image_id}.npz")
        assert classes.tolist() == data.labels(image_id)
        assert cams.shape[1:] == data.read_image(image_id).shape[:2]
        if len(classes):  # each map peaks near 1 (x / (max + 1e-5)), or is 0 where it never fires
            peaks = cams.max(axis=(1, 2))
            assert np.all((peaks <= 1.0005) & ((peaks > 0.9) | (peaks == 0)))
            assert cams.min() >= 0
    single = tmp_path / "single"
    shutil.copytree(tmp_path / "cls", single / "cls")
    dump_cams.run(dump_cams.DumpCamsConfig(**{**cfg, "workdir": single}))
    for path in (tmp_path / "cams").glob("*.npz"):
        np.testing.assert_array_equal(read_cams(path)[1], read_cams(single / "cams" / path.name)[1])
    state = json.loads((tmp_path / "state.json").read_text())["dump-cams"]
    assert state["status"] == "done" and state["count"] == 32
    result = eval_cams.run(eval_cams.EvalCamsConfig(data=toy, workdir=tmp_path, runtime=QUIET))
    assert 0 <= result["best_threshold"] <= 0.95 and 0 < result["miou"] <= 100
    otsu = result["otsu"]  # the threshold from the CAMs alone scores no better than the best
    assert 0 < otsu["threshold"] < 1 and otsu["miou"] <= result["miou"]
    per_image = result["otsu_per_image"]  # each image thresholded at its own Otsu threshold
    assert 0 < per_image["mean_threshold"] < 1 and 0 < per_image["miou"] <= 100
    assert result["sweep"][f"{otsu['threshold']:.2f}"] == otsu["miou"]
    assert 0 < result["fg_precision"] <= 100 and 0 < result["fg_recall"] <= 100
    assert json.loads((tmp_path / "eval/cams_train.json").read_text())["miou"] == result["miou"]


def test_checkpoint_for_another_class_count_is_refused(toy, tmp_path, coco128):
    train_cls.run(_cls_config(toy, tmp_path, epochs=1))
    with pytest.raises(WsssError, match="num_classes"):
        dump_cams.run(dump_cams.DumpCamsConfig(data=coco128, workdir=tmp_path, runtime=QUIET,
                                               cls_model=tmp_path / "cls/model.pt", workers=0))


def test_dump_cams_on_real_photos(coco128, tmp_path):
    """Every labelled real photo (many sizes, one grayscale) gets a readable CAM file."""
    cfg = train_cls.TrainClsConfig(data=coco128, workdir=tmp_path, backbone="tiny", epochs=1,
                                   batch_size=16, crop_size=96, resize_long=(80, 112),
                                   workers=0, runtime=QUIET)
    train_cls.run(cfg)
    dump_cams.run(dump_cams.DumpCamsConfig(data=coco128, workdir=tmp_path, scales=(0.5,),
                                           workers=2, runtime=QUIET))
    data = VocDataset(coco128)
    ids = data.ids("train")
    assert len(ids) == 97
    for image_id in ids:
        classes, cams = read_cams(tmp_path / "cams" / f"{image_id}.npz")
        assert cams.shape == (len(data.labels(image_id)), *data.read_image(image_id).shape[:2])
        assert np.isfinite(cams).all()


def test_a_moved_workdir_keeps_its_outputs(toy, tmp_path):
    """The settings hash covers what made the outputs, not where the workdir lives."""
    train_cls.run(_cls_config(toy, tmp_path / "a", epochs=1))
    cfg = dict(data=toy, scales=(0.5,), workers=0, runtime=QUIET)
    dump_cams.run(dump_cams.DumpCamsConfig(workdir=tmp_path / "a", **cfg))
    shutil.move(tmp_path / "a", tmp_path / "b")
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "b/cams").glob("*.npz")}
    dump_cams.run(dump_cams.DumpCamsConfig(workdir=tmp_path / "b", **cfg))
    assert before == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "b/cams").glob("*.npz")}


def test_classifier_presets_take_colour_jitter_from_their_papers(toy):
    def resolved(backbone: str) -> train_cls.TrainClsConfig:
        return train_cls.TrainClsConfig(data=toy, backbone=backbone).resolved()

    assert resolved("resnet38").color_jitter == 0.3  # PSA: ColorJitter(0.3, 0.3, 0.3, hue 0.1)
    assert resolved("resnet50").color_jitter == 0.0  # IRN: flip, rescale and crop only
    # colour tells the toy classes apart: jitter 0.3 cost 6 CAM mIoU on the held-out set
    assert resolved("tiny").color_jitter == 0.0
    chosen = train_cls.TrainClsConfig(data=toy, backbone="tiny", color_jitter=0.2).resolved()
    assert chosen.color_jitter == 0.2


def test_write_labels_gives_torch_its_threads_back(tmp_path):
    # it lends the CRF processes cores; `wsss demo` trains its next stages in the same process
    original = torch.get_num_threads()
    threads = (os.cpu_count() or 1) + 1  # never what write_labels sets for its pool
    torch.set_num_threads(threads)
    try:
        scores = np.zeros((2, 8, 8), np.float32)
        scores[1, :, 4:] = 1.0  # channel 1 = class 3 on the right half
        tasks = [(tmp_path / f"{i}.png", np.zeros((8, 8, 3), np.uint8), scores, np.array([3]))
                 for i in range(3)]
        write_labels(iter(tasks), crf=None, jobs=2, progress=lambda it: it)
        assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(original)
    for i in range(3):
        label = read_mask(tmp_path / f"{i}.png")
        assert (label[:, :4] == 0).all() and (label[:, 4:] == 3).all()
