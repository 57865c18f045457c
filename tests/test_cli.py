"""The command-line contract: help, config files, exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from wsss_cli.cli import main
from wsss_cli.data.io import read_mask, write_palette_png


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """``python -m wsss_cli ARGS`` in a subprocess (real exit codes and stderr)."""
    return subprocess.run([sys.executable, "-m", "wsss_cli", *args], capture_output=True,
                          text=True, timeout=600)


@pytest.mark.parametrize("command", sorted(main.commands))
def test_every_command_has_help_with_defaults(command):
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: main" in result.output or "Usage:" in result.output
    params = [p for p in main.commands[command].params if p.default not in (None, False)]
    if params:
        assert "default:" in result.output


def test_user_errors_exit_2_with_one_line(tmp_path):
    result = run_cli("train-cls", "--data", str(tmp_path), "--workdir", str(tmp_path / "w"))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "JPEGImages" in result.stderr and "Traceback" not in result.stderr


def test_config_file_sections_and_typos(tmp_path):
    (tmp_path / "good.toml").write_text('[toy-data]\nnum-train = 3\nnum_val = 2\nsize = 48\n')
    out = tmp_path / "toy"
    result = run_cli("--config", str(tmp_path / "good.toml"), "toy-data", str(out))
    assert result.returncode == 0, result.stderr
    assert len((out / "ImageSets/Segmentation/train.txt").read_text().split()) == 3
    # the command line wins over the file
    result = run_cli("--config", str(tmp_path / "good.toml"), "toy-data", str(tmp_path / "t2"),
                     "--num-train", "4")
    assert len((tmp_path / "t2/ImageSets/Segmentation/train.txt").read_text().split()) == 4
    (tmp_path / "bad.toml").write_text('[toy-data]\nnum-trian = 3\n')
    result = run_cli("--config", str(tmp_path / "bad.toml"), "toy-data", str(out))
    assert result.returncode == 2 and "num-trian" in result.stderr
    (tmp_path / "bad2.toml").write_text('[trian-cls]\nepochs = 3\n')
    result = run_cli("--config", str(tmp_path / "bad2.toml"), "toy-data", str(out))
    assert result.returncode == 2 and "trian-cls" in result.stderr


@pytest.mark.parametrize("device", ["tpu", "cuda:7", "cuda"])
def test_bad_device_fails_up_front_with_one_line_naming_it(tmp_path, device):
    """A valid dataset and work folder: only the device is wrong, and nothing is written."""
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    data, workdir = tmp_path / "toy", tmp_path / "w"
    assert run_cli("toy-data", str(data), "--num-train", "4", "--num-val", "2").returncode == 0
    result = run_cli("--device", device, "eval-cams", "--data", str(data), "--workdir", str(workdir))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "--device" in result.stderr
    assert not workdir.exists()


def _independent_miou(preds, gts, k):
    ious = []
    for c in range(k):
        inter = union = 0
        for p, g in zip(preds, gts, strict=True):
            valid = g != 255
            inter += np.sum((p == c) & (g == c) & valid)
            union += np.sum(((p == c) | (g == c)) & valid)
        if union:
            ious.append(inter / union)
    return 100 * float(np.mean(ious))


def test_eval_agrees_with_an_independent_evaluator_on_real_masks(tmp_path, coco128):
    ids = (coco128 / "ImageSets/Segmentation/train.txt").read_text().split()[:40]
    rng = np.random.default_rng(0)
    pred_dir = tmp_path / "pred"
    preds, gts = [], []
    for image_id in ids:
        gt = read_mask(coco128 / "SegmentationClass" / f"{image_id}.png")
        pred = np.where(gt == 255, 0, gt)
        pred = np.roll(pred, int(rng.integers(-15, 15)), axis=1)  # a misaligned prediction
        pred[rng.random(pred.shape) < 0.05] = int(rng.integers(0, 21))
        write_palette_png(pred_dir / f"{image_id}.png", pred)
        preds.append(pred)
        gts.append(gt)
    result = run_cli("eval", "--pred", str(pred_dir), "--gt", str(coco128 / "SegmentationClass"),
                     "--classes", str(coco128 / "classes.txt"))
    assert result.returncode == 0, result.stderr
    want = _independent_miou(preds, gts, 21)
    assert abs(json.loads((pred_dir / "eval.json").read_text())["miou"] - want) < 0.01
    assert result.stdout.strip().splitlines()[-1] == f"mIoU: {want:.2f}"
