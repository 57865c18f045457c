"""make-pseudo: options and [stage] config sections reach each stage; real photos work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from wsss_cli import cli
from wsss_cli.data.dataset import VocDataset
from wsss_cli.data.io import read_mask
from wsss_cli.data.toy import make_toy_dataset


def test_options_and_sections_reach_each_stage(tmp_path, monkeypatch):
    make_toy_dataset(tmp_path / "toy", num_train=4, num_val=1, size=48)
    seen = {}
    monkeypatch.setattr("wsss_cli.workflows.make_pseudo.run", lambda cfg: seen.setdefault("cfg", cfg))
    (tmp_path / "c.toml").write_text(
        f'data = "{tmp_path / "toy"}"\n'
        "[train-aff]\nepochs = 3\nbatch-size = 2\n"
        "[random-walk]\nbeta = 4.0\ncrf = false\n"
        "[make-pseudo]\nalpha-low = 5.0\n")
    result = CliRunner().invoke(cli.main, [
        "--config", str(tmp_path / "c.toml"), "make-pseudo", "--workdir", str(tmp_path / "w"),
        "--crf-iters", "3", "--beta", "6"])
    assert result.exit_code == 0, result.output
    cfg = seen["cfg"]
    assert cfg.train_aff.epochs == 3 and cfg.train_aff.batch_size == 2  # [train-aff] section
    assert cfg.random_walk.beta == 6  # the command line beats the [random-walk] section
    assert cfg.random_walk.crf is False  # [random-walk] section
    assert cfg.make_aff_labels.alpha_low == 5.0  # [make-pseudo] section
    assert cfg.make_aff_labels.crf_iters == 3 and cfg.random_walk.crf_iters == 3
    assert cfg.dump_cams.scales == (1.0, 0.5, 1.5, 2.0)  # stage default
    assert cfg.dump_cams.data == Path(tmp_path / "toy")


def test_saliency_reaches_both_stages_and_its_help_says_what_each_does(tmp_path, monkeypatch):
    (tmp_path / "toy").mkdir()
    seen = {}
    monkeypatch.setattr("wsss_cli.workflows.make_pseudo.run", lambda cfg: seen.setdefault("cfg", cfg))
    result = CliRunner().invoke(cli.main, ["make-pseudo", "--data", str(tmp_path / "toy"),
                                           "--workdir", str(tmp_path / "w"), "--saliency",
                                           "spectral"])
    assert result.exit_code == 0, result.output
    assert seen["cfg"].make_aff_labels.saliency == seen["cfg"].random_walk.saliency == "spectral"
    text = " ".join(CliRunner().invoke(cli.main, ["make-pseudo", "--help"]).output.split())
    meaning = text[text.index("--saliency DIR"):text.index("--saliency-threshold")]
    assert "make-aff-labels: The confident background" in meaning
    assert "random-walk: Scale the walked background" in meaning
    assert "dump-cams:" not in text  # an option every stage reads alike keeps one help


@pytest.mark.slow
def test_make_pseudo_on_real_photos(coco128, tmp_path):
    """train-cls + make-pseudo on the 97 labelled real photos: a valid label per image."""
    def wsss(*args: str) -> None:
        result = subprocess.run([sys.executable, "-m", "wsss_cli", "--device", "cpu", "--quiet",
                                 *args, "--data", str(coco128), "--workdir", str(tmp_path)],
                                capture_output=True, text=True, timeout=3600)
        assert result.returncode == 0, result.stderr[-2000:]

    wsss("train-cls", "--backbone", "tiny", "--epochs", "2")
    wsss("make-pseudo", "--epochs", "2", "--jobs", "2", "--scales", "1.0,0.5")
    data = VocDataset(coco128)
    for image_id in data.ids("train"):
        label = read_mask(tmp_path / "pseudo" / f"{image_id}.png")
        assert label.shape == data.read_image(image_id).shape[:2]
        assert set(np.unique(label).tolist()) <= {0, *data.labels(image_id)}
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["random-walk"]["count"] == 97


def test_ial_takes_its_own_options_and_train_seg_section(tmp_path, monkeypatch):
    make_toy_dataset(tmp_path / "toy", num_train=4, num_val=1, size=48)
    seen = {}
    monkeypatch.setattr("wsss_cli.workflows.make_pseudo.run", lambda cfg: seen.setdefault("cfg", cfg))
    (tmp_path / "c.toml").write_text("[train-seg]\nepochs = 4\nhead = \"largefov\"\n"
                                     "[dump-cams]\nmethod = \"gradcam\"\n")
    result = CliRunner().invoke(cli.main, [
        "--config", str(tmp_path / "c.toml"), "make-pseudo", "--data", str(tmp_path / "toy"),
        "--workdir", str(tmp_path / "w"), "--method", "ial", "--rounds", "2", "--workers", "0",
        "--epochs", "3"])
    assert result.exit_code == 0, result.output
    cfg = seen["cfg"]
    assert cfg.method.method == "ial" and cfg.method.rounds == 2
    assert cfg.unary.epochs == 4 and cfg.unary.head == "largefov"  # [train-seg], not train-aff's --epochs
    assert cfg.unary.workers == 0 and cfg.unary.data == tmp_path / "toy"  # the shared options
    assert cfg.dump_cams.method == "gradcam"  # dump-cams's own --method only from its section


def test_crf_power_keeps_each_methods_default_unless_given(tmp_path, monkeypatch):
    make_toy_dataset(tmp_path / "toy", num_train=4, num_val=1, size=48)
    seen = []
    monkeypatch.setattr("wsss_cli.workflows.make_pseudo.run", lambda cfg: seen.append(cfg))
    base = ["make-pseudo", "--data", str(tmp_path / "toy"), "--workdir", str(tmp_path / "w"),
            "--method", "ial"]
    for extra in ([], ["--crf-power", "3"]):
        result = CliRunner().invoke(cli.main, base + extra)
        assert result.exit_code == 0, result.output
    default, given = seen
    # random-walk's is unset until its backbone preset fills it; IAL's E-step has its own
    assert default.random_walk.crf_power is None and default.method.crf_power == 1.0
    assert given.random_walk.crf_power == 3.0 and given.method.crf_power == 3.0
