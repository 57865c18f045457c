"""Helpers shared by the shard and crash tests: a workdir with every PSA artifact, made
once per module, the exact command lines of the per-image stages, output comparison."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from click.testing import CliRunner

from wsss_cli.cli import main
from wsss_cli.data.dataset import VocDataset
from wsss_cli.data.io import read_mask
from wsss_cli.data.toy import make_toy_dataset
from wsss_cli.workdir import read_cams

GLOBAL = ["--device", "cpu", "--quiet"]
TINY_TRAINING = ["--backbone", "tiny", "--epochs", "1", "--batch-size", "8", "--workers", "0",
                 "--resize-long", "48", "80"]


def stage_args(command: str, data: Path, workdir: Path) -> list[str]:
    """The command line of a stage as the tests run it (references use the same)."""
    common = ["--data", str(data), "--workdir", str(workdir)]
    extra = {
        "train-cls": [*TINY_TRAINING, "--crop-size", "64"],
        "dump-cams": ["--scales", "1.0,0.5", "--workers", "0"],
        "make-aff-labels": ["--crf-iters", "5"],
        "train-aff": [*TINY_TRAINING, "--crop-size", "96"],
        "random-walk": ["--workers", "0", "--crf-iters", "5"],
    }[command]
    return [command, *common, *extra]


# per-image stage -> (output folder under the workdir, file suffix)
OUTPUTS = {"dump-cams": ("cams", ".npz"), "make-aff-labels": ("aff_labels", ".png"),
           "random-walk": ("pseudo", ".png")}


def invoke(args: list[str]) -> None:
    """Run the CLI in this process with one torch thread (the subprocesses use one too,
    so that float results are bit-identical)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = CliRunner().invoke(main, [*GLOBAL, *args])
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, (args, result.output, result.exception)


def build_reference(root: Path, num_train: int = 16) -> tuple[Path, Path]:
    """A toy dataset and a workdir where every PSA stage ran uninterrupted, unsharded."""
    data, workdir = root / "toy", root / "reference"
    make_toy_dataset(data, num_train=num_train, num_val=2, size=64)
    for command in ("train-cls", "dump-cams", "make-aff-labels", "train-aff", "random-walk"):
        invoke(stage_args(command, data, workdir))
    return data, workdir


def workdir_without(reference: Path, target: Path, command: str) -> Path:
    """A copy of the reference workdir as it was before ``command`` ran (inputs kept)."""
    shutil.copytree(reference, target)
    shutil.rmtree(target / OUTPUTS[command][0])
    state = json.loads((target / "state.json").read_text())
    del state[command]
    (target / "state.json").write_text(json.dumps(state))
    return target


def spawn(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    """``python -m wsss_cli --device cpu --quiet ARGS`` in the background, one thread."""
    return subprocess.Popen([sys.executable, "-m", "wsss_cli", *GLOBAL, *args],
                            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished_files(folder: Path, suffix: str) -> list[Path]:
    """Outputs under their final names (temporary files start with '.')."""
    return sorted(p for p in folder.glob(f"*{suffix}") if not p.name.startswith("."))


def assert_same_outputs(got: Path, want: Path, suffix: str, data: Path) -> None:
    """Same file names; PNGs byte-equal and readable at the image's size, CAMs equal."""
    names = [p.name for p in finished_files(want, suffix)]
    assert names and [p.name for p in finished_files(got, suffix)] == names
    dataset = VocDataset(data)
    for name in names:
        image_shape = dataset.read_image(Path(name).stem).shape[:2]
        if suffix == ".npz":
            classes, cams = read_cams(got / name)
            want_classes, want_cams = read_cams(want / name)
            np.testing.assert_array_equal(classes, want_classes)
            np.testing.assert_array_equal(cams, want_cams)
            assert cams.shape[1:] == image_shape
        else:
            assert read_mask(got / name).shape == image_shape
            assert (got / name).read_bytes() == (want / name).read_bytes(), name


def stage_state(workdir: Path, command: str) -> dict:
    return json.loads((workdir / "state.json").read_text())[command]
