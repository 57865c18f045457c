"""Bad input (SPEC §8): exit code 2, one line naming the file or option, no traceback,
and nothing half-written. One row per kind of bad input, through the real CLI."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import wsss_cli
from wsss_cli.cli import main
from wsss_cli.data.io import read_image, write_palette_png
from wsss_cli.data.toy import make_toy_dataset
from wsss_cli.errors import WsssError
from wsss_cli.workdir import read_cams

BAD = "train_00003"  # the image each row spoils
TINY = ["--backbone", "tiny", "--epochs", "1", "--batch-size", "4", "--crop-size", "64",
        "--resize-long", "48", "80", "--workers", "0"]


def cli(*args: str):
    return CliRunner().invoke(main, ["--device", "cpu", "--quiet", *map(str, args)])


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> tuple[Path, Path]:
    """A toy dataset and a workdir with a classifier, CAMs and affinity labels."""
    root = tmp_path_factory.mktemp("bad_input")
    data, work = root / "data", root / "work"
    make_toy_dataset(data, num_train=8, num_val=2, size=64)
    for args in (["train-cls", *TINY], ["dump-cams", "--scales", "0.5", "--workers", "0"],
                 ["make-aff-labels", "--crf-iters", "2"]):
        result = cli(args[0], "--data", data, "--workdir", work, *args[1:])
        assert result.exit_code == 0, result.output
    shutil.copytree(data, root / "pristine")
    return data, work


@pytest.fixture
def spoilable(base, tmp_path) -> Iterator[tuple[Path, Path]]:
    """The dataset (at its own path: the workdir's settings name it) and a copy of the
    workdir; the dataset is restored afterwards."""
    data, work = base
    shutil.copytree(work, tmp_path / "work")
    yield data, tmp_path / "work"
    shutil.rmtree(data)
    shutil.copytree(data.parent / "pristine", data)


def _image(data: Path) -> Path:
    return data / "JPEGImages" / f"{BAD}.jpg"


def _mask(data: Path) -> Path:
    return data / "SegmentationClass" / f"{BAD}.png"


def _split(data: Path) -> Path:
    return data / "ImageSets" / "Segmentation" / "train.txt"


def _labels(data: Path, **changes) -> None:
    path = data / "cls_labels.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:300])


def _resize_mask(data: Path) -> None:
    mask = np.zeros((20, 30), np.uint8)
    write_palette_png(_mask(data), mask)


def _mask_value(data: Path, value: int) -> None:
    with Image.open(_mask(data)) as im:
        mask = np.array(im)
    mask[0, 0] = value
    write_palette_png(_mask(data), mask)


def _more_classes(data: Path) -> None:
    path = data / "classes.txt"
    path.write_text(path.read_text() + "hexagon\n")


def _spoil_image_for_dump(data: Path, work: Path) -> None:
    _image(data).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (work / "cams" / f"{BAD}.npz").unlink()  # so that dump-cams reads the image again


def _spoil_cam(work: Path) -> None:
    (work / "cams" / f"{BAD}.npz").write_bytes(b"PK\x03\x04 not really a zip")
    (work / "aff_labels" / f"{BAD}.png").unlink()  # so that make-aff-labels reads it again


TRAIN = ("train-cls", "fresh", TINY)
DUMP = ("dump-cams", "work", ["--scales", "0.5", "--workers", "0"])
EVAL_CAMS = ("eval-cams", "work", [])

# id, how the data / workdir is spoiled, (command, workdir, options), what the message names
ROWS: list[tuple[str, Callable[[Path, Path], object], tuple, str]] = [
    ("missing image", lambda d, w: _image(d).unlink(), DUMP, f"{BAD}.jpg: image not found"),
    ("id in split with no image", lambda d, w: _split(d).write_text(_split(d).read_text() + "ghost\n"),
     TRAIN, "ghost.jpg: image not found"),
    ("truncated JPEG", lambda d, w: _truncate(_image(d)), TRAIN, f"{BAD}.jpg: truncated JPEG"),
    ("corrupt image", lambda d, w: _image(d).write_bytes(b"\xff\xd8 garbage \xff\xd9"), TRAIN,
     f"{BAD}.jpg: not a readable image"),
    ("empty image file", lambda d, w: _image(d).write_bytes(b""), TRAIN, f"{BAD}.jpg: not a readable image"),
    ("image path is a folder", lambda d, w: (_image(d).unlink(), _image(d).mkdir()), TRAIN,
     f"{BAD}.jpg: cannot read image"),
    ("corrupt image in a per-image stage", lambda d, w: _spoil_image_for_dump(d, w), DUMP,
     f"{BAD}.jpg: not a readable image"),
    ("mask size mismatch", lambda d, w: _resize_mask(d), EVAL_CAMS, f"{BAD}.png: mask size (30, 20) differs"),
    ("class index out of range in a mask", lambda d, w: _mask_value(d, 40), EVAL_CAMS,
     f"{BAD}.png: class index 40 out of range"),
    ("class index out of range in labels", lambda d, w: _labels(d, **{BAD: [99]}), TRAIN,
     f"cls_labels.json: image '{BAD}': class 99 out of range"),
    ("unknown class name", lambda d, w: _labels(d, **{BAD: ["unicorn"]}), TRAIN,
     f"cls_labels.json: image '{BAD}': unknown class name 'unicorn' (classes: disc, square, "),
    ("labels not JSON", lambda d, w: (d / "cls_labels.json").write_text("{oops"), TRAIN,
     "cls_labels.json: not valid JSON"),
    ("empty split", lambda d, w: _split(d).write_text("\n"), TRAIN, "train.txt: empty split"),
    ("unknown split", lambda d, w: None, ("train-cls", "fresh", [*TINY, "--split", "trian"]),
     "--split trian"),
    ("id escaping the data folder", lambda d, w: _split(d).write_text("../x\n"), TRAIN,
     "image id '../x' is not a plain file name"),
    ("checkpoint for another class count", lambda d, w: _more_classes(d), DUMP,
     "model.pt: checkpoint has num_classes=6, expected 7"),
    ("checkpoint for another backbone", lambda d, w: None,
     ("train-aff", "work", ["--backbone", "vgg16", "--pretrained", "cls", "--epochs", "1"]),
     "model.pt: checkpoint has backbone='tiny', expected 'vgg16'"),
    ("checkpoint of another kind", lambda d, w: None,
     ("dump-cams", "work", ["--cls-model", "{work}/cams/" + BAD + ".npz"]),
     f"{BAD}.npz: not a readable checkpoint"),
    ("corrupt checkpoint", lambda d, w: (w / "cls" / "model.pt").write_bytes(b"\x80garbage"), DUMP,
     "model.pt: not a readable checkpoint"),
    ("corrupt CAM file", lambda d, w: _spoil_cam(w), ("make-aff-labels", "work", ["--crf-iters", "2"]),
     f"{BAD}.npz: not a readable CAM file"),
    ("workdir made with other settings", lambda d, w: None,
     ("dump-cams", "work", ["--scales", "1.0", "--workers", "0"]), "pass --overwrite"),
    ("bad shard", lambda d, w: None, ("make-aff-labels", "work", ["--shard", "2/2"]), "--shard 2/2"),
    ("crop too small for the affinity pairs", lambda d, w: None,
     ("train-aff", "work", ["--crop-size", "64", "--epochs", "1", "--workers", "0"]), "--crop-size 64"),
]


def _snapshot(work: Path) -> dict[str, int]:
    """Every file a stage produces (not the bookkeeping that records the attempt)."""
    skip = {"log.txt", "state.json", "config.toml", ".lock"}
    return {str(p.relative_to(work)): p.stat().st_mtime_ns for p in work.rglob("*")
            if p.is_file() and p.name not in skip}


@pytest.mark.parametrize(("spoil", "run", "message"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_bad_input_is_one_line_exit_2_and_nothing_half_written(spoilable, tmp_path, spoil, run,
                                                              message):
    data, work = spoilable
    spoil(data, work)
    command, where, options = run
    workdir = work if where == "work" else tmp_path / "fresh"
    before = _snapshot(workdir) if workdir.exists() else {}
    options = [o.replace("{work}", str(work)) for o in options]
    with warnings.catch_warnings(record=True) as caught:  # a warning is one more line on stderr
        warnings.simplefilter("always")
        result = cli(command, "--data", data, "--workdir", workdir, *options)
    assert result.exit_code == 2, (result.output, result.exception)
    assert [str(w.message) for w in caught] == []
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert message in lines[0]
    assert result.stdout == "" and "Traceback" not in result.output
    if workdir.exists():
        assert _snapshot(workdir) == before
        assert not list(workdir.rglob("*.tmp"))


def _cut_png(path: Path) -> bytes:
    """The image as a PNG whose header is whole and whose pixel data stops half way."""
    import cv2

    data = cv2.imencode(".png", read_image(path))[1].tobytes()
    return data[: len(data) // 2]




@pytest.mark.parametrize(("spoil", "message", "checked"), [
    (_truncate, "truncated JPEG", True),  # the check before the stage starts finds it
    # a readable header, pixel data cut short: found by a DataLoader worker
    (lambda path: path.write_bytes(_cut_png(path)), "not a readable image", False),
], ids=["truncated JPEG", "incomplete PNG"])
def test_broken_image_in_a_dataloader_worker_is_one_line_on_stderr(base, tmp_path, spoil, message,
                                                                    checked):
    """The real process, with worker processes: their re-raised error keeps one line, and
    no library adds its own complaint to stderr. A file the cheap check finds stops the
    stage before it starts; one it misses marks the started stage failed."""
    data = tmp_path / "data"
    shutil.copytree(base[0], data)
    spoil(_image(data))
    workdir = tmp_path / "w"
    args = ["train-cls", "--data", str(data), "--workdir", str(workdir), *TINY[:-1], "2"]
    result = subprocess.run([sys.executable, "-m", "wsss_cli", "--device", "cpu", "--quiet", *args],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert f"{BAD}.jpg: {message}" in result.stderr and "Traceback" not in result.stderr
    assert not (workdir / "cls" / "model.pt").exists() and not (workdir / "cls" / "last.pt").exists()
    if checked:
        assert not (workdir / "state.json").exists()
    else:  # not "running" for ever, and the log says why
        state = json.loads((workdir / "state.json").read_text())["train-cls"]
        assert state["status"] == "failed" and f"{BAD}.jpg: {message}" in state["error"]
        assert f"failed: {workdir.parent}" in (workdir / "cls/log.txt").read_text()


def test_grayscale_rgba_and_cmyk_images_are_converted(base, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(base[0], data)
    images = data / "JPEGImages"
    converted = {"train_00001": ("L", ".jpg"), "train_00002": ("RGBA", ".png"),
                 "train_00004": ("CMYK", ".jpg")}
    for image_id, (mode, suffix) in converted.items():
        rgb = read_image(images / f"{image_id}.jpg")
        (images / f"{image_id}.jpg").unlink()
        Image.fromarray(rgb).convert(mode).save(images / f"{image_id}{suffix}")
    workdir = tmp_path / "w"
    for args in (["train-cls", *TINY], ["dump-cams", "--scales", "0.5", "--workers", "0"]):
        result = cli(args[0], "--data", data, "--workdir", workdir, *args[1:])
        assert result.exit_code == 0, (result.output, result.exception)
    for image_id in converted:
        _, cams = read_cams(workdir / "cams" / f"{image_id}.npz")
        assert cams.shape[1:] == read_image(base[0] / "JPEGImages" / f"{image_id}.jpg").shape[:2]
        assert np.isfinite(cams).all()


class _Payload:
    """Unpickling this creates a file: what a booby-trapped checkpoint could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_checkpoints_and_cam_files_never_unpickle_code(base, tmp_path):
    data, work = base
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"model": _Payload(marker), "meta": {"kind": "cls"}}, evil)
    result = cli("dump-cams", "--data", data, "--workdir", tmp_path / "w", "--cls-model", evil)
    assert result.exit_code == 2 and "evil.pt: not a readable checkpoint" in result.stderr
    np.savez(tmp_path / "evil.npz", classes=np.array([1]), cams=np.array([_Payload(marker)], dtype=object))
    with pytest.raises(WsssError, match="not a readable CAM file"):
        read_cams(tmp_path / "evil.npz")
    assert not marker.exists()


def test_every_load_in_the_package_is_safe():
    """torch.load only with weights_only=True, np.load never with pickles, no pickle module."""
    package = Path(wsss_cli.__file__).parent
    for path in package.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not {"pickle", "dill", "cloudpickle"} & set(names), path
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                keywords = {k.arg: k.value for k in node.keywords}
                if node.func.attr == "load" and ast.unparse(node.func.value) == "torch":
                    flag = keywords.get("weights_only")
                    assert isinstance(flag, ast.Constant) and flag.value is True, f"{path}:{node.lineno}"
                if node.func.attr == "load" and ast.unparse(node.func.value) in ("np", "numpy"):
                    flag = keywords.get("allow_pickle")
                    assert flag is None or (isinstance(flag, ast.Constant) and not flag.value), path


@pytest.mark.parametrize(("errno_", "cause"), [(28, "No space left on device"),
                                               (13, "Permission denied")],
                         ids=["disk full", "permission denied"])
def test_an_os_error_mid_stage_is_one_line_and_marks_the_stage_failed(base, tmp_path, monkeypatch,
                                                                      errno_, cause):
    """What a cluster's full disk or quota does to dump-cams after a few images: exit 2,
    one line naming the path and the cause, state.json and the log say failed, and the
    files written before it are whole."""
    import os

    from wsss_cli.stages import dump_cams

    data, work = base[0], tmp_path / "w"
    real_write, written = dump_cams.write_cams, []

    def write_until_full(path, classes, cams):
        if len(written) == 3:
            raise OSError(errno_, os.strerror(errno_), str(path))
        real_write(path, classes, cams)
        written.append(path)

    monkeypatch.setattr(dump_cams, "write_cams", write_until_full)
    shutil.copytree(base[1] / "cls", work / "cls")
    result = CliRunner().invoke(main, ["--device", "cpu", "--quiet", "dump-cams", "--data", str(data),
                                       "--workdir", str(work), "--scales", "0.5", "--workers", "0"])
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {work / 'cams'}") and cause in lines[0]
    state = json.loads((work / "state.json").read_text())["dump-cams"]
    assert state["status"] == "failed" and cause in state["error"]
    assert f"failed: {work / 'cams'}" in (work / "cams/log.txt").read_text()
    assert all(read_cams(p)[1].ndim == 3 for p in written) and len(written) == 3
    assert not list(work.rglob("*.tmp"))
