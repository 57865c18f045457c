"""wsss report: the HTML page built from a workdir's artifacts, and how it renders."""

from __future__ import annotations

import json
import logging
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
from wsss_cli.data.io import read_mask, voc_palette, write_palette_png
from wsss_cli.data.toy import TOY_CLASSES, make_toy_dataset
from wsss_cli.report.collect import collect
from wsss_cli.report.evaluations import collect_evaluations
from wsss_cli.report.pictures import cam_heatmap, colour_labels, thumbnail
from wsss_cli.report.samples import choose_samples, image_miou
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
    out = run(ReportConfig(workdir=workdir, samples=4, worst=0))
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


def test_seeds_get_a_column_once_make_seeds_has_run(tmp_path, toy_data):
    workdir = make_workdir(tmp_path / "w", toy_data)
    for image_id in VocDataset(toy_data).ids("train")[:4]:
        pseudo = read_mask(workdir / "pseudo" / f"{image_id}.png")
        write_palette_png(workdir / "seeds" / f"{image_id}.png", pseudo)
    page = run(ReportConfig(workdir=workdir, samples=4, worst=0)).read_text()
    assert count_images(page) == 4 * 6
    assert page.count('alt="seeds: square"') == 4
    assert page.index('alt="affinity label') < page.index('alt="seeds') < page.index('alt="pseudo-label')


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
    page = run(ReportConfig(workdir=workdir, samples=1, worst=0)).read_text()
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
                                       "--worst", "0", "--out", str(out)])
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


# ---------------------------------------------------------------- training curves, run facts, failures


def write_metrics(folder: Path, records: list[dict], tail: str = "") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + tail)


def polylines(page: str, series: str) -> list[list[tuple[float, float]]]:
    """The points of every training-curve polyline of ``series`` (its legend label)."""
    found = re.findall(rf'<polyline class="\w+" data-series="{re.escape(series)}" points="([^"]*)"', page)
    return [[tuple(float(v) for v in point.split(",")) for point in points.split()] for points in found]


def test_training_curves_from_metrics_jsonl(tmp_path, toy_data):
    workdir = make_workdir(tmp_path / "w", toy_data)
    wd = Workdir(workdir)
    # train-cls in its default folder: 5 epochs, epoch 3 repeated by a resumed run (the last one counts)
    losses = [0.9, 0.7, 0.5, 0.4, 0.3]
    write_metrics(workdir / "cls", [
        *({"epoch": e + 1, "step": 10 * e, "loss": loss, "lr": 0.01, "seconds": 2.0}
          for e, loss in enumerate(losses[:3])),
        {"epoch": 3, "step": 20, "loss": 0.45, "lr": 0.01, "seconds": 2.0},
        *({"epoch": e + 1, "step": 10 * e, "loss": losses[e], "lr": 0.01, "seconds": 2.0} for e in (3, 4)),
    ], tail='{"epoch": 6, "lo')  # a line still being written
    # a named set: train-seg:seg_b, in the folder its config.toml section names, validated every 2 epochs
    wd.update_stage("train-seg:seg_b", status="done", seconds=30.0)
    wd.record_config("train-seg:seg_b", {"out": "models/seg_b", "seed": 0})
    write_metrics(workdir / "models" / "seg_b", [
        {"epoch": e, "step": e, "loss": 1.0 / e, "lr": 0.001, "seconds": 3.0,
         **({"val_miou": 80.0 - 5 * e} if e % 2 == 0 else {})} for e in range(1, 5)])
    # a single-stage model in its default folder, with no state entry: its two losses too
    write_metrics(workdir / "single_stage", [
        {"epoch": e, "step": e, "loss": 2.0 / e, "lr": 0.1, "seconds": 1.0, "loss_cls": 1.0 / e,
         "loss_mask": float("nan") if e == 2 else 1.0 / e} for e in range(1, 4)])
    page = run(ReportConfig(workdir=workdir, samples=1, worst=0)).read_text()
    assert "<h2>Training curves</h2>" in page
    cls, seg, single = polylines(page, "loss")
    assert len(cls) == 5 and len(seg) == 4 and len(single) == 3  # one point per epoch
    # the highest loss at the top of the plot, 0 at its bottom; x from the first to the last epoch
    assert cls[0] == (44.0, 10.0) and cls[-1][0] == 284.0
    assert [y for _, y in cls] == sorted(y for _, y in cls)  # the loss falls: y grows downwards
    assert cls[2][1] == round(134 - 124 * 0.45 / 0.9, 1)  # the resumed run's epoch 3
    assert ">train-cls</b>: 5 epochs, 10.0 s" in page and "(cls/metrics.jsonl)" in page
    # val mIoU on its own axis, only at the epochs that have it
    (miou,) = polylines(page, "val mIoU %")
    assert len(miou) == 2 and miou[0][0] == seg[1][0] and miou[1] == (284.0, round(134 - 124 * 0.6, 1))
    assert ">train-seg:seg_b</b>: 4 epochs" in page and "models/seg_b/metrics.jsonl" in page
    assert "val mIoU % 60 (best 70.00)" in page
    # the NaN of loss_mask is a gap, not a point
    assert len(polylines(page, "loss (cls)")[0]) == 3 and len(polylines(page, "loss (mask)")[0]) == 2
    assert ">train-single-stage</b>" in page
    # no metrics.jsonl anywhere: no section
    for path in workdir.rglob("metrics.jsonl"):
        path.unlink()
    assert "Training curves" not in run(ReportConfig(workdir=workdir, samples=1, worst=0)).read_text()


def test_run_facts_and_settings_per_stage(tmp_path, toy_data):
    workdir = make_workdir(tmp_path / "w", toy_data)
    wd = Workdir(workdir)
    environment = {"cpu_capability": "AVX2", "threads": 2, "cpu": "Toy <CPU> & co",
                   "libraries": {"torch": "2.13.0", "numpy": "2.4.6"}}
    versions = {"wsss": "0.1.0", "torch": "2.13.0+cpu"}
    for stage, seed in (("train-cls", 0), ("dump-cams", 0), ("random-walk", 3)):
        wd.update_stage(stage, settings={"data": str(toy_data), "lr": 0.01, "scales": [1.0, 0.5],
                                         "seed": seed}, versions=versions, environment=environment)
        wd.record_config(stage, {"data": toy_data, "workers": 2, "device": "cpu", "seed": seed})
    page = run(ReportConfig(workdir=workdir, samples=1, worst=0)).read_text()
    facts = re.search(r'<dl class="meta facts">(.*?)</dl>', page, re.S)[1]
    # the same for every stage: one value; different: each value with its stages
    assert "<dt>device</dt><dd>cpu</dd>" in facts
    assert '<dt>seed</dt><dd class="varies">0 (train-cls, dump-cams); 3 (random-walk)</dd>' in facts
    assert "<dd>wsss 0.1.0, torch 2.13.0+cpu</dd>" in facts
    assert "<dt>cpu capability</dt><dd>AVX2</dd>" in facts and "<dt>threads</dt><dd>2</dd>" in facts
    assert "<dd>torch 2.13.0, numpy 2.4.6</dd>" in facts
    assert "Toy &lt;CPU&gt; &amp; co" in facts and "<CPU>" not in page
    # a fact only some stages recorded says which (here random-walk loses its record)
    Workdir(workdir).update_stage("random-walk", environment=None, versions=None)
    facts = re.search(r'<dl class="meta facts">(.*?)</dl>',
                      run(ReportConfig(workdir=workdir, samples=1, worst=0)).read_text(), re.S)[1]
    assert '<dt>threads</dt><dd>2 <span class="muted">(only train-cls, dump-cams)</span></dd>' in facts
    assert "<dt>device</dt><dd>cpu</dd>" in facts  # config.toml has it for every stage
    # per stage, collapsed: hashed settings, then config.toml's other options in grey, versions, environment
    assert page.count("<details>") == 3 and "<details open" not in page
    train_cls = re.search(r"<details><summary><b>train-cls</b>(.*?)</details>", page, re.S)[1]
    assert "6 settings, versions, environment" in train_cls
    assert "<td>scales</td><td>1.0, 0.5</td>" in train_cls
    assert '<tr class="unhashed"><td>workers</td><td>2</td></tr>' in train_cls
    assert '<tr class="unhashed"><td>device</td><td>cpu</td></tr>' in train_cls
    assert "<td>libraries.torch</td><td>2.13.0</td>" in train_cls
    assert "<td>threads</td><td>2</td>" in train_cls


def test_failed_stage_shows_its_error(tmp_path, toy_data):
    workdir = make_workdir(tmp_path / "w", toy_data)
    error = 'cams/train_00003.npz: No space left on device <disk "full"> & more'
    Workdir(workdir).update_stage("train-seg", status="failed", error=error, seconds=4.0)
    page = run(ReportConfig(workdir=workdir, samples=1, worst=0)).read_text()
    escaped = "cams/train_00003.npz: No space left on device &lt;disk &#34;full&#34;&gt; &amp; more"
    assert f'<tr class="error"><td colspan="5"><pre>{escaped}</pre></td></tr>' in page
    assert '<disk "full">' not in page
    # the red badge in its row, the error right below it, and a line in the header naming it
    row = page.index("<tr><td>train-seg</td>")
    assert page.index('<span class="badge failed">failed</span>', row) < page.index(escaped)
    header = page[: page.index("</header>")]
    assert 'class="alert"><span class="badge failed">failed</span> train-seg:' in header
    assert page.count('class="error"') == 1  # done and running stages have no error row
    Workdir(workdir).update_stage("train-seg", status="done", error=None)
    page = run(ReportConfig(workdir=workdir, samples=1, worst=0)).read_text()
    assert 'class="alert"' not in page and 'class="error"' not in page


# ---------------------------------------------------------------- val samples, worst images, image folders


def write_predictions(workdir: Path, data: Path, split: str,
                      damage: dict[int, str] | None = None) -> list[str]:
    """Predictions of ``split`` equal to the ground truth but for the images ``damage`` names:
    ``"empty"`` (all background) or ``"half"`` (the left half background); returns the ids."""
    dataset = VocDataset(data)
    ids = sorted(dataset.ids(split))
    for i, image_id in enumerate(ids):
        mask = dataset.read_mask(image_id).copy()
        mask[mask == 255] = 0
        how = (damage or {}).get(i)
        if how == "empty":
            mask[:] = 0
        elif how == "half":
            mask[:, : mask.shape[1] // 2] = 0
        write_palette_png(workdir / "pred" / split / f"{image_id}.png", mask)
    return ids


def section(page: str, title: str) -> str:
    """The HTML of the section headed ``title``."""
    start = page.index(f"<h2>{title}</h2>")
    return page[start: page.index("</section>", start)]


def test_val_samples_are_shown_when_val_has_predictions(tmp_path, toy_data):
    workdir = make_workdir(tmp_path / "w", toy_data)
    page = run(ReportConfig(workdir=workdir, samples=2, worst=0)).read_text()
    assert "Samples: split val" not in page  # pred/val has only eval.json
    val_ids = write_predictions(workdir, toy_data, "val")
    page = run(ReportConfig(workdir=workdir, samples=2, worst=0)).read_text()
    assert page.index("<h2>Samples: split train</h2>") < page.index("<h2>Samples: split val</h2>")
    val = section(page, "Samples: split val")
    assert f">{val_ids[0]}<" in val and f">{val_ids[-1]}<" in val and "train_0" not in val
    # the val rows show image, prediction and ground truth: the CAM, affinity label and
    # pseudo-label columns, missing in every val row, are left out
    assert count_images(val) == 2 * 3 and 'class="missing"' not in val and "CAM" not in val
    assert val.count("<figcaption>prediction: ") == 2 and val.count("<figcaption>ground truth: ") == 2
    # --split val: the val samples once, with every column
    page = run(ReportConfig(workdir=workdir, split="val", samples=2, worst=0)).read_text()
    assert page.count("<h2>Samples: split val</h2>") == 1 and "Samples: split train" not in page
    assert page.count("CAM <span") == 2


def test_image_miou():
    gt = np.array([[0, 0, 1, 1, 255]], np.uint8)
    pred = np.array([[0, 1, 1, 1, 2]], np.uint8)  # the ignored pixel's class 2 does not count
    assert image_miou(gt, pred) == pytest.approx(100 * (1 / 2 + 2 / 3) / 2)
    unsure = np.array([[0, 0, 255, 1, 0]], np.uint8)  # 255 predicted: wrong, but not a class
    assert image_miou(gt, unsure) == pytest.approx(100 * (2 / 2 + 1 / 2) / 2)
    assert image_miou(gt, gt) == 100.0 and image_miou(np.full((2, 2), 255, np.uint8), gt[:, :4]) is None


def test_worst_images_by_iou(tmp_path, toy_data):
    workdir = make_workdir(tmp_path / "w", toy_data)
    ids = write_predictions(workdir, toy_data, "train", {5: "empty", 2: "half"})
    progress_calls = []

    def progress(items, desc):
        progress_calls.append(desc)
        return items

    report = collect(workdir, samples=2, worst=3, progress=progress)
    assert "report: IoU (train)" in progress_calls
    train = report.sample_sets[0]
    assert [s.image_id for s in train.worst][:2] == [ids[5], ids[2]]
    assert train.worst[2].note == "mIoU 100.0 %" and train.worst[2].image_id == ids[0]  # ties: by id
    page = run(ReportConfig(workdir=workdir, samples=2, worst=2)).read_text()
    worst = section(page, "Samples: split train").split("<h3>Worst by IoU</h3>")[1]
    assert re.findall(r'<div class="id">(\w+)', worst) == [ids[5], ids[2]]
    assert "The 2 of 8 images with the lowest mIoU of their prediction (pred/train/)" in worst
    # full rows: image, CAM, affinity label, pseudo-label (only the 3rd image has one), prediction, truth
    assert count_images(worst) == 6 + 5
    # without predictions: the pseudo-labels (the first 4 images have one) are ranked
    shutil.rmtree(workdir / "pred" / "train")
    page = run(ReportConfig(workdir=workdir, samples=2, worst=8)).read_text()
    worst = section(page, "Samples: split train").split("<h3>Worst by IoU</h3>")[1]
    assert "The 4 of 4 images with the lowest mIoU of their pseudo-label (pseudo/)" in worst
    assert sorted(re.findall(r'<div class="id">(\w+)', worst)) == ids[:4]
    # --worst 0: no ranking
    assert "Worst by IoU" not in run(ReportConfig(workdir=workdir, samples=2, worst=0)).read_text()


def test_images_folder_with_its_predictions(tmp_path, toy_data):
    workdir = make_workdir(tmp_path / "w", toy_data)
    folder = tmp_path / "photos"
    folder.mkdir()
    names = ["b_cat", "a_dog", "c_car"]
    for name, source in zip(names, sorted((toy_data / "JPEGImages").glob("val_*.jpg")), strict=False):
        shutil.copy(source, folder / f"{name}.jpg")
    (folder / "notes.txt").write_text("not an image")
    # predict --images photos wrote pred/photos/ (and colour overlays, which the report ignores)
    for name in names[:2]:
        h, w = cv2.imread(str(folder / f"{name}.jpg")).shape[:2]
        mask = np.zeros((h, w), np.uint8)
        mask[: h // 2, : w // 2] = 1
        write_palette_png(workdir / "pred" / "photos" / f"{name}.png", mask)
    (workdir / "pred" / "photos" / "overlay").mkdir()
    cv2.imwrite(str(workdir / "pred" / "photos" / "overlay" / "a_dog.png"), np.zeros((4, 4, 3), np.uint8))
    out = tmp_path / "r.html"
    result = CliRunner().invoke(main, ["--quiet", "report", "--workdir", str(workdir), "--images",
                                       str(folder), "--samples", "1", "--worst", "0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    photos = section(page, "Samples: images folder photos")
    assert re.findall(r'<div class="id">(\w+)', photos) == sorted(names)  # every image, in name order
    assert "All 3 images of" in photos and "pred/photos/ (2 of 3 present" in photos
    # image, prediction (with its classes) and the overlay; the third image has no prediction yet
    assert photos.count("<figcaption>prediction: disc</figcaption>") == 2
    assert photos.count("<figcaption>prediction <span") == 1
    assert count_images(photos) == 3 + 2 + 2 and "ground truth" not in photos and "notes" not in photos
    # the dataset's samples are still there
    assert "Samples: split train" in page
    # predict --images photos --out custom: found through its config.toml section
    (workdir / "pred" / "photos").rename(workdir / "custom")
    Workdir(workdir).record_config("predict:custom", {"images": folder, "out": "custom"})
    photos = section(run(ReportConfig(workdir=workdir, images=folder, samples=1, worst=0)).read_text(),
                     "Samples: images folder photos")
    assert "custom/ (2 of 3 present" in photos
    assert photos.count("<figcaption>prediction: disc</figcaption>") == 2
    result = CliRunner().invoke(main, ["report", "--workdir", str(workdir), "--images", str(tmp_path / "no")])
    assert result.exit_code == 2 and "--images" in result.output


# ---------------------------------------------------------------- rendering in a real browser


@pytest.fixture(scope="session")
def chromium() -> str:
    """The ``chromium`` binary, else skip: a test never installs system packages (CI's
    ``.ci/run`` installs Chromium itself, in the open)."""
    found = shutil.which("chromium")
    if not found:
        pytest.skip("chromium is not installed (apt-get install chromium); the page is not rendered")
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


# ---------------------------------------------------------------- wsss diagnose


DIAGNOSIS = {
    "split": "train", "images": 8, "start": "[0.6, CAMs / max], CRF on scores^4",
    "affinity_labels": {"foreground_share": 12.34, "foreground_precision": 87.65, "background_share": 80.11,
                        "background_precision": 93.21, "unsure_share": 7.55},
    "affinity_net": {"auc": 71.42, "auc_by_distance": {"1": 66.61, "2": 68.82, "5": 74.93},
                     "pairs": {"same_class": 1234567, "different_class": 7654}},
    "chain": {name: {"miou": miou, "per_class": per_class(miou), "pixels": 1000,
                     "inside_objects": inside, "outside_objects": outside}
              for name, miou, inside, outside in (
                  ("CAM", 31.11, 41.01, 3.31), ("CAM + CRF", 36.66, 39.02, 0.92),
                  ("walk", 44.44, 52.03, 1.13), ("walk + CRF", 42.22, 50.04, 0.24))},
}


def test_diagnosis_section(tmp_path, toy_data):
    workdir = make_workdir(tmp_path / "w", toy_data)
    page = run(ReportConfig(workdir=workdir, samples=1, worst=0)).read_text()
    assert "<h2>Diagnosis</h2>" not in page  # no diagnose_*.json: no section
    write_json(workdir / "eval" / "diagnose_train.json", DIAGNOSIS)
    page = run(ReportConfig(workdir=workdir, samples=1, worst=0)).read_text()
    diag = section(page, "Diagnosis")
    assert "split train: 8 images, the walk starts from [0.6, CAMs / max], CRF on scores^4" in diag
    assert "eval/diagnose_train.json" in diag
    # the affinity labels: share and precision of each kind (unsure has no precision)
    for name, share, right in (("confident foreground", "12.34", "87.65"),
                               ("confident background", "80.11", "93.21")):
        assert re.search(rf"<td>{name}</td><td>.*?<b>{share}</b>.*?<b>{right}</b>.*?</tr>", diag)
    assert re.search(r"<td>unsure</td><td>.*?<b>7.55</b>.*?—", diag)
    # AffinityNet: overall, then by distance, with the pairs counted
    auc = re.search(r"<tr><td>AUC %</td>(.*?)</tr>", diag)[1]
    assert re.findall(r"[\d.]+", auc) == ["71.42", "66.61", "68.82", "74.93"]
    assert "1,234,567 same-class and 7,654 different-class pairs" in diag
    # the chain, in order: link, mIoU (the best one highlighted), object px right, background px as object
    rows = re.findall(r"<tr><td>(CAM|CAM \+ CRF|walk|walk \+ CRF)</td>(.*?)</tr>", diag)
    assert [name for name, _ in rows] == ["CAM", "CAM + CRF", "walk", "walk + CRF"]
    assert [re.findall(r">([\d.]+)<", cells) for _, cells in rows] == [
        ["31.11", "41.01", "3.31"], ["36.66", "39.02", "0.92"], ["44.44", "52.03", "1.13"],
        ["42.22", "50.04", "0.24"]]
    assert 'class="bar best"><i style="width:44.4%"></i><b>44.44</b>' in diag
    # each part says how to read it
    assert diag.count('<p class="muted">') >= 4 and "50 chance" in diag and "lower is better" in diag
    # not an evaluation: no row of the mIoU table, no column of the per-class table
    assert "diagnose" not in section(page, "mIoU") and "diagnose" not in section(page, "Per-class IoU %")
    assert "31.11" not in page.replace(diag, "")
    # parts not measured say so; a malformed file, or one that is not JSON, is a note
    write_json(workdir / "eval" / "diagnose_val.json", {**DIAGNOSIS, "split": "val", "affinity_labels": None,
                                                        "chain": None})
    # (one with a top-level miou is still no evaluation)
    write_json(workdir / "eval" / "diagnose_bad.json", {**DIAGNOSIS, "miou": 98.76,
                                                        "affinity_net": {"auc": "fairly_good"}})
    (workdir / "eval" / "diagnose_junk.json").write_text("[1, 2")
    write_json(workdir / "eval" / "diagnose_list.json", [1, 2])
    page = run(ReportConfig(workdir=workdir, samples=1, worst=0)).read_text()
    diag = section(page, "Diagnosis")
    assert re.findall(r"<h3>split (\w+)", diag) == ["bad", "junk", "list", "train", "val"]
    assert diag.count("unreadable: not a result of wsss diagnose") == 3
    assert "Not measured (no affinity labels" in diag and "Not measured (no CAMs" in diag
    assert "fairly_good" not in diag and "98.76" not in page


def test_ial_rounds_are_listed_with_their_regions_precision(tmp_path):
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    for k, miou in ((1, 70.0), (2, 72.5)):
        (eval_dir / f"ial_round{k}.json").write_text(json.dumps(
            {"round": k, "split": "train", "miou": miou, "per_class": {},
             "regions": {"precision": 80.0 + k, "coverage": 40.0}}))
    (eval_dir / "ial_round0.json").write_text(json.dumps(  # the seeds: no mIoU, not listed
        {"round": 0, "split": "train", "regions": {"precision": 75.0, "coverage": 30.0}}))
    (eval_dir / "ial_round2_train.json").write_text(json.dumps({"miou": 71.0, "per_class": {}}))
    labels = {e.label: e.miou for e in collect_evaluations(tmp_path)}
    assert labels == {"IAL round 1 (train, regions 81.0 % precise, 40.0 % of pixels)": 70.0,
                      "IAL round 2 (train, regions 82.0 % precise, 40.0 % of pixels)": 72.5,
                      "IAL round 2 (train)": 71.0}


COMPARE = {"split": "train", "backbone": "tiny", "methods": [
    {"method": "cam", "best": {"threshold": 0.37, "miou": 72.75, "fg_precision": 77.45,
                               "fg_recall": 86.31},
     "otsu": {"threshold": 0.35, "miou": 72.65, "fg_precision": 75.71, "fg_recall": 88.09},
     "train_seconds": 81.5},
    {"method": "acol", "best": {"threshold": 0.61, "miou": 70.12, "fg_precision": 70.5,
                                "fg_recall": 91.25},
     "otsu": None, "train_seconds": 120.0}]}


def test_compare_section_lists_every_method_and_its_cam_sets(tmp_path, toy_data):
    workdir = make_workdir(tmp_path / "w", toy_data)
    page = run(ReportConfig(workdir=workdir, samples=1, worst=0)).read_text()
    assert "CAM methods compared" not in page
    write_json(workdir / "eval" / "compare_train.json", COMPARE)
    write_json(workdir / "eval" / "cams_acol_train.json", {"split": "train", "miou": 70.12,
                                                           "per_class": {}, "best_threshold": 0.61})
    (workdir / "eval" / "compare_val.json").write_text("{1")
    page = run(ReportConfig(workdir=workdir, samples=1, worst=0)).read_text()
    table = section(page, "CAM methods compared")
    rows = re.findall(r"<tr><td>(\w+)</td>(.*?)</tr>", table)
    assert [name for name, _ in rows] == ["cam", "acol"]
    assert re.findall(r">([\d.—-]+)<", rows[0][1]) == [
        "0.37", "72.75", "77.45", "86.31", "0.35", "72.65", "75.71", "88.09", "81.50"]
    assert re.findall(r">([\d.]+)<", rows[1][1]) == ["0.61", "70.12", "70.50", "91.25", "120.00"]
    assert "unreadable: not a result of wsss compare" in table and "eval/compare_train.json" in table
    # each method's CAM set is an evaluation named by its set
    assert "CAM cams_acol (train, threshold 0.61)" in section(page, "mIoU")
