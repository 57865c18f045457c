"""wsss report: the HTML page built from a workdir's artifacts, and how it renders."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from wsss_cli.cli import main
from wsss_cli.data.dataset import VocDataset
from wsss_cli.data.io import voc_palette, write_palette_png
from wsss_cli.data.toy import TOY_CLASSES, make_toy_dataset
from wsss_cli.report.collect import cam_heatmap, choose_samples, colour_labels, thumbnail
from wsss_cli.stages.report import ReportConfig, run
from wsss_cli.workdir import Workdir, write_cams, write_json

log = logging.getLogger(__name__)


def per_class(base: float) -> dict[str, float | None]:
    values = {name: round(base + i, 2) for i, name in enumerate(TOY_CLASSES)}
    values["cross"] = None  # a class absent from the split: IoU undefined
    return values


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("toy")
    make_toy_dataset(root, num_train=8, num_val=4, size=64)
    return root


def make_workdir(root: Path, data: Path, with_config: bool = True) -> Path:
    """A workdir as the stages leave it, written directly (no training):

    cams for every train image, affinity labels for the first 6, pseudo-labels for the
    first 4, no predictions of the train split; evaluations of CAMs (with CRF), of the
    pseudo-labels, of val predictions, plus files the report must skip.
    """
    wd = Workdir(root)
    wd.update_stage("train-cls", status="done", seconds=12.5, images=8)
    wd.update_stage("dump-cams", status="done", seconds=3.25, count=8, total=8)
    wd.update_stage("random-walk", status="running", seconds=1.0, count=4, total=8)
    if with_config:
        wd.record_config("dump-cams", {"data": data, "workdir": root, "split": "train"})
    dataset = VocDataset(data)
    rng = np.random.default_rng(0)
    for i, image_id in enumerate(dataset.ids("train")):
        h, w = dataset.read_image(image_id).shape[:2]
        write_cams(root / "cams" / f"{image_id}.npz", np.array([1, 3]),
                   rng.random((2, h, w), dtype=np.float32))
        label = np.zeros((h, w), np.uint8)
        label[: h // 2] = 2
        label[-3:] = 255
        if i < 6:
            write_palette_png(root / "aff_labels" / f"{image_id}.png", label)
        if i < 4:
            write_palette_png(root / "pseudo" / f"{image_id}.png", np.minimum(label, 2))
    sweep = {f"{t / 100:.2f}": 40 + t / 2 for t in range(0, 61)}
    write_json(root / "eval" / "cams_train.json",
               {"miou": 61.2345, "per_class": per_class(50), "best_threshold": 0.31, "sweep": sweep,
                "crf": {"miou": 66.5, "per_class": per_class(55)}, "images": 8})
    write_json(root / "eval" / "pseudo_train.json", {"miou": 70.1, "per_class": per_class(60), "images": 8})
    write_json(root / "eval" / "custom_thing.json", {"miou": 12.0, "per_class": {"x<y": 12.0}})
    write_json(root / "eval" / "demo.json", {"miou": {"CAM (train)": 61.2345}})  # a summary: skipped
    write_json(root / "eval" / "old_demo.json", {"train_miou": {"CAM": 61.2345}})
    (root / "eval" / "broken.json").write_text("{not json")
    write_json(root / "pred" / "val" / "eval.json", {"miou": 55.5, "per_class": per_class(45), "images": 4})
    return root


def count_images(page: str) -> int:
    return page.count('src="data:image/')


def test_report_has_miou_classes_and_pictures(tmp_path, toy_data):
    workdir = make_workdir(tmp_path / "w", toy_data)
    out = run(ReportConfig(workdir=workdir, samples=4))
    assert out == workdir / "report.html"
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    # every evaluation with an miou, named readably, in pipeline order; demo.json and junk skipped
    labels = ["CAM (train, threshold 0.31)", "CAM + CRF (train)", "pseudo-labels (train)",
              "segmentation net (val)", "custom_thing"]
    positions = [page.index(f"<td>{label}</td>") for label in labels]
    assert positions == sorted(positions)
    for number in ("61.23", "66.50", "70.10", "55.50", "12.00"):
        assert number in page
    assert "demo.json" not in page and "broken" not in page and "CAM (train)" not in page
    for name in TOY_CLASSES:
        assert f"</span>{name}</td>" in page  # a per-class row with its colour swatch
    assert "x&lt;y" in page and "x<y" not in page  # text is escaped
    # the stages of state.json, in pipeline order, with status and time
    assert page.index(">train-cls<") < page.index(">dump-cams<") < page.index(">random-walk<")
    assert 'class="badge running"' in page and "12.5 s" in page and "4/8" in page
    # 4 samples, each with image, CAM, affinity label, pseudo-label and ground truth;
    # the train split has no predictions: one placeholder per row
    assert count_images(page) == 4 * 5
    assert page.count('class="missing"') == 4
    assert page.count("prediction <span") == 4
    # self-contained: no script and nothing fetched from elsewhere
    assert "<script" not in page and not re.search(r'(src|href)="(https?:)?//', page)


def test_pictures_are_small_and_unsure_is_white():
    label = np.full((375, 500), 255, np.uint8)
    label[:100, :100] = 15
    small = thumbnail(colour_labels(label), nearest=True)
    assert small.shape == (180, 240, 3)
    assert {tuple(c) for c in small.reshape(-1, 3)} == {(255, 255, 255), tuple(voc_palette()[15])}
    heat = cam_heatmap(np.zeros((0, 30, 40), np.float32), None)  # an image with no class
    assert heat.shape == (30, 40, 3) and (heat == heat[0, 0]).all()


def test_samples_are_evenly_spaced_over_the_best_equipped_ids(tmp_path, toy_data):
    workdir = make_workdir(tmp_path / "w", toy_data)
    data = VocDataset(toy_data)
    ids = sorted(data.ids("train"))
    # ids 0..3 have every artifact but predictions; 4, 5 lack the pseudo-label; 6, 7 more
    assert choose_samples(workdir, data, "train", 2) == ([ids[0], ids[3]], 4)
    assert choose_samples(workdir, data, "train", 4) == (ids[:4], 4)
    picks, pool = choose_samples(workdir, data, "train", 5)
    assert pool == 6 and picks == [ids[0], ids[1], ids[2], ids[4], ids[5]]
    assert choose_samples(workdir, data, "train", 50) == (ids, 8)
    # the same page twice, but for the time it was generated
    pages = [re.sub(r"generated</dt><dd>[^<]*", "", run(ReportConfig(workdir=workdir)).read_text())
             for _ in range(2)]
    assert pages[0] == pages[1]


def test_missing_data_and_unreadable_artifacts_are_placeholders(tmp_path, toy_data):
    workdir = make_workdir(tmp_path / "w", toy_data, with_config=False)
    first = sorted(VocDataset(toy_data).ids("train"))[0]
    (workdir / "pseudo" / f"{first}.png").write_bytes(b"not a png")
    (workdir / "cams" / f"{first}.npz").write_bytes(b"not an npz")
    page = run(ReportConfig(workdir=workdir, samples=8, out=tmp_path / "r.html")).read_text()
    assert "none found" in page  # no --data, no config.toml, no WORKDIR/data
    # without a dataset: no image, no ground truth; CAM heat-maps alone
    assert page.count("image <span") == 8 and page.count("ground truth <span") == 8
    assert page.count("(unreadable)") == 2
    assert count_images(page) == 7 + 6 + 3  # CAMs, affinity labels, readable pseudo-labels
    # without a dataset the class order comes from a built-in list the evaluations match
    assert "CAM: disc, triangle" in page
    for path in [*workdir.glob("eval/*.json"), *workdir.glob("pred/*/eval.json")]:
        path.unlink()
    page = run(ReportConfig(workdir=workdir, samples=8, out=tmp_path / "r.html")).read_text()
    assert "CAM: class 1, class 3" in page and "No evaluation" in page


def test_data_defaults_to_config_toml_then_workdir_data(tmp_path, toy_data):
    workdir = make_workdir(tmp_path / "w", toy_data)
    page = run(ReportConfig(workdir=workdir, samples=1)).read_text()
    assert f"<dd>{toy_data.resolve()}</dd>" in page and count_images(page) == 5
    # a recorded dataset that has gone away is skipped; WORKDIR/data (the demo's) is next
    moved = shutil.copytree(toy_data, tmp_path / "moved")
    (workdir / "config.toml").write_text(f'[dump-cams]\ndata = "{tmp_path / "gone"}"\n')
    assert "none found" in run(ReportConfig(workdir=workdir, samples=1)).read_text()
    shutil.copytree(moved, workdir / "data")
    page = run(ReportConfig(workdir=workdir, samples=1)).read_text()
    assert f"<dd>{(workdir / 'data').resolve()}</dd>" in page
    # --data wins over both; with --split val the val ids are shown
    page = run(ReportConfig(workdir=workdir, data=moved, split="val", samples=2)).read_text()
    assert f"<dd>{moved.resolve()}</dd>" in page and "val_00000" in page and "train_0000" not in page


def test_cli_writes_report_and_rejects_a_non_workdir(tmp_path, toy_data):
    workdir = make_workdir(tmp_path / "w", toy_data)
    out = tmp_path / "sub" / "page.html"
    result = CliRunner().invoke(main, ["--quiet", "report", "--workdir", str(workdir), "--samples", "2",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(out) and count_images(out.read_text()) == 10
    for path in (tmp_path / "nope", tmp_path / "sub"):  # missing, and a folder without state.json
        result = CliRunner().invoke(main, ["report", "--workdir", str(path)])
        assert result.exit_code == 2
        assert result.output.strip().count("\n") == 0
        assert "not a wsss workdir (no state.json)" in result.output and str(path) in result.output


def test_text_from_the_workdir_is_escaped(tmp_path, toy_data):
    workdir = make_workdir(tmp_path / "w", toy_data, with_config=False)
    evil = "<script>alert(1)</script>"
    Workdir(workdir).update_stage('predict:<img src=x onerror="alert(2)">', status="<b>done</b>")
    # without a dataset the class names (and so the CAM captions) come from this evaluation
    for path in workdir.glob("eval/*.json"):
        path.unlink()
    write_json(workdir / "eval" / "cams_train.json",
               {"miou": 50.0, "per_class": {"background": 90.0, evil: 10.0, 'a"b&c': 50.0},
                "sweep": {"0.1": 40.0, "0.2": 50.0}, "best_threshold": 0.2})
    page = run(ReportConfig(workdir=workdir, samples=2, out=tmp_path / "r.html")).read_text()
    assert "<script" not in page and "<img src=x" not in page and "<b>done" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "CAM: &lt;script&gt;alert(1)&lt;/script&gt;" in page  # class 1 of the CAMs
    assert "a&#34;b&amp;c" in page and 'a"b' not in page
    assert "onerror=&#34;alert(2)&#34;" in page and 'class="badge &lt;b&gt;done&lt;/b&gt;"' in page


def test_page_is_self_contained(tmp_path, toy_data):
    workdir = make_workdir(tmp_path / "w", toy_data)
    page = run(ReportConfig(workdir=workdir, samples=8)).read_text()
    assert "http://" not in page and "https://" not in page and "url(" not in page
    assert "<script" not in page and "<link" not in page and "@import" not in page
    # every reference is an embedded picture, and the style is inline
    references = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert len(references) == count_images(page) > 0
    assert all(ref.startswith("data:image/") for ref in references)
    assert page.count("<style>") == 1 and ".sample{" in page
    # the threshold sweep is drawn as inline SVG: one point per threshold, and the best one marked
    points = re.search(r'<polyline points="([^"]*)"', page)[1].split()
    assert len(points) == 61 and points[0] == "28.0,58.0" and points[-1] == "312.0,10.0"
    assert ">best 0.31</text>" in page


# ---------------------------------------------------------------- rendering in a real browser


@pytest.fixture(scope="session")
def chromium() -> str:
    """The ``chromium`` binary; installed with apt-get when missing and possible, else skip."""
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("chromium is not installed and cannot be (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command, timeout in ((["apt-get", "update", "-qq"], 300),
                             (["apt-get", "install", "-y", "-qq", "chromium"], 900)):
        log.warning("installing chromium for the report test: %s", " ".join(command))
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.skip(f"{' '.join(command)} took over {timeout} s")
        if done.returncode != 0:
            pytest.skip(f"{' '.join(command)} failed: {done.stderr.strip()[-300:]}")
    found = shutil.which("chromium")
    if not found:
        pytest.skip("apt-get installed chromium but it is not on PATH")
    return found


def test_report_renders_in_headless_chromium(tmp_path, toy_data, chromium):
    workdir = make_workdir(tmp_path / "w", toy_data)
    page = run(ReportConfig(workdir=workdir, samples=8))
    shot = tmp_path / "shot.png"
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
               "--window-size=1200,1600", page.resolve().as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    image = cv2.imread(str(shot))
    assert image is not None and image.shape[:2] == (1600, 1200)
    # not blank: text, tables, bars and pictures give many colours and much contrast
    colours = np.unique(image.reshape(-1, 3), axis=0)
    assert len(colours) > 500 and image.std() > 25
    background = np.median(image.reshape(-1, 3), axis=0)
    assert (np.abs(image.astype(int) - background).max(axis=2) > 30).mean() > 0.1
