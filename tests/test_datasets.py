"""COCO and labels.csv datasets, eval-cams without masks, import-dataset (issue 21)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from pycocotools import mask as coco_mask

from wsss_cli.cli import main
from wsss_cli.data import coco
from wsss_cli.data.dataset import VocDataset, open_dataset
from wsss_cli.data.io import read_mask, write_jpeg, write_palette_png
from wsss_cli.data.toy import make_toy_dataset
from wsss_cli.errors import WsssError
from wsss_cli.workdir import write_cams

H, W = 40, 50


def _image(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_jpeg(path, np.random.default_rng(seed).integers(0, 255, (H, W, 3), dtype=np.uint8))


def _rect(x0: int, y0: int, x1: int, y1: int) -> list[list[float]]:
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def make_coco(root: Path, extra_annotations: tuple[dict, ...] = ()) -> Path:
    """Three images: A (train) with a large car, a small person on it (polygons) and a crowd
    of dogs (uncompressed RLE) half over the car; B (train) a dog as compressed RLE; C (val)
    nothing. Category ids 1, 3, 18 are not contiguous."""
    for split, name in (("train2014", "a.jpg"), ("train2014", "b.jpg"), ("val2014", "c.jpg")):
        _image(root / split / name)
    crowd = np.zeros((H, W), np.uint8, order="F")
    crowd[0:20, 30:50] = 1
    uncompressed = {"size": [H, W], "counts": [int(c) for c in _runs(crowd)]}
    dog = np.zeros((H, W), np.uint8, order="F")
    dog[5:15, 5:25] = 1
    compressed = coco_mask.encode(dog)
    compressed["counts"] = compressed["counts"].decode()
    categories = [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}, {"id": 3, "name": "car"}]
    train = {
        "images": [{"id": 10, "file_name": "a.jpg", "height": H, "width": W},
                   {"id": 11, "file_name": "b.jpg", "height": H, "width": W}],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 1, "iscrowd": 0, "area": 100,
             "segmentation": _rect(15, 15, 25, 25)},
            {"id": 2, "image_id": 10, "category_id": 3, "iscrowd": 0, "area": 1200,
             "segmentation": _rect(5, 5, 45, 35)},
            {"id": 3, "image_id": 10, "category_id": 18, "iscrowd": 1, "area": 400,
             "segmentation": uncompressed},
            {"id": 4, "image_id": 11, "category_id": 18, "iscrowd": 0, "area": 200,
             "segmentation": compressed},
            *extra_annotations,
        ],
        "categories": categories,
    }
    val = {"images": [{"id": 20, "file_name": "c.jpg", "height": H, "width": W}],
           "annotations": [], "categories": categories}
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_train2014.json").write_text(json.dumps(train))
    (root / "annotations" / "instances_val2014.json").write_text(json.dumps(val))
    return root


def _runs(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE of a binary mask: run lengths in column-major order, zeros first."""
    flat = mask.ravel(order="F")
    edges = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], edges, [flat.size]])
    runs = np.diff(bounds).tolist()
    return runs if flat[0] == 0 else [0, *runs]


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("WSSS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_coco_classes_labels_splits(tmp_path: Path, cache: Path) -> None:
    data = open_dataset(make_coco(tmp_path / "coco"))
    assert data.layout == "coco"
    assert data.classes == ("background", "person", "car", "dog")  # category id order
    assert data.splits() == ["train", "val"]
    assert data.ids("train") == ["a", "b"] and data.ids("val2014") == ["c"]
    assert data.labels("a") == [1, 2, 3]  # the crowd's class too
    assert data.labels("b") == [3] and data.labels("c") == []
    assert data.image_path("c") == tmp_path / "coco" / "val2014" / "c.jpg"
    with pytest.raises(WsssError, match="--split test"):
        data.ids("test")
    assert data.has_masks(data.ids("train")) and not list(cache.rglob("*.png"))  # none rendered yet


def test_coco_masks_overlap_crowd_rle_and_cache(tmp_path: Path, cache: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    data = open_dataset(make_coco(tmp_path / "coco"))
    a = data.read_mask("a")
    assert a[20, 20] == 1  # the small person wins over the car under it
    assert a[10, 10] == 2 and a[30, 40] == 2  # car; car also where the crowd lies over it
    assert a[2, 40] == 255 and a[15, 48] == 255  # crowd, no instance: ignored
    assert a[38, 2] == 0
    assert (a == 1).sum() == 100  # a 10 x 10 polygon: pixel centres inside
    b = data.read_mask("b")
    assert set(np.unique(b)) == {0, 3} and (b == 3).sum() == 200
    assert (data.read_mask("c") == 0).all()
    masks = list(cache.rglob("masks/*.png"))
    assert sorted(p.stem for p in masks) == ["a", "b", "c"]
    monkeypatch.setattr(coco, "render_mask", lambda *a: pytest.fail("rendered twice"))
    reopened = open_dataset(tmp_path / "coco")
    assert (reopened.read_mask("a") == a).all()


def test_coco_bad_annotations_are_listed(tmp_path: Path) -> None:
    bad = {"id": 9, "image_id": 11, "category_id": 99, "iscrowd": 0, "area": 1,
           "segmentation": _rect(0, 0, 2, 2)}
    root = make_coco(tmp_path / "coco", (bad,))
    with pytest.raises(WsssError, match="unknown category_id 99"):
        open_dataset(root).ids("train")
    (root / "train2014" / "b.jpg").unlink()
    problems = open_dataset(root, strict=False).problems("train")
    assert len(problems) == 2
    assert "unknown category_id 99" in problems[0] and "b.jpg: image not found" in problems[1]


def make_csv(root: Path, rows: list[str], classes: tuple[str, ...] | None = None) -> Path:
    for name in ("x.jpg", "photos/y.jpg", "z.png"):
        _image(root / name)
    (root / "labels.csv").write_text("image,labels\n" + "".join(f"{r}\n" for r in rows))
    if classes:
        (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root


def test_csv_dataset(tmp_path: Path) -> None:
    root = make_csv(tmp_path / "csv", ["x.jpg,dog;cat", "photos/y.jpg, cat | bird ", "z.png,"])
    data = open_dataset(root)
    assert data.layout == "csv"
    assert data.classes == ("background", "bird", "cat", "dog")
    assert data.ids("train") == ["x", "y", "z"]
    assert data.labels("x") == [2, 3] and data.labels("y") == [1, 2] and data.labels("z") == []
    assert data.read_image("y").shape == (H, W, 3)
    assert not data.has_masks(data.ids("train"))
    write_palette_png(root / "masks" / "x.png", np.full((H, W), 2, np.uint8))
    assert data.mask_path("x") is not None and data.read_mask("x")[0, 0] == 2
    (root / "splits").mkdir()
    (root / "splits" / "val.txt").write_text("z\n")
    assert data.splits() == ["val"] and data.ids("val") == ["z"]
    with pytest.raises(WsssError, match="--split train"):
        data.ids("train")


def test_csv_bad_rows(tmp_path: Path) -> None:
    rows = ["x.jpg,dog", "missing.jpg,dog", "photos/y.jpg,unicorn", "x.jpg,cat"]
    root = make_csv(tmp_path / "csv", rows, classes=("background", "cat", "dog"))
    with pytest.raises(WsssError, match=r"labels.csv:3: image .*missing.jpg not found \(and 2 more"):
        open_dataset(root)
    problems = open_dataset(root, strict=False).problems("train")
    assert [p.split(": ", 1)[0][-len("labels.csv:5"):] for p in problems] == \
        ["labels.csv:3", "labels.csv:4", "labels.csv:5"]
    assert "unknown class 'unicorn'" in problems[1] and "duplicate id 'x'" in problems[2]


def _invoke(args: list[str]) -> object:
    return CliRunner().invoke(main, ["--quiet", *args])


def test_import_dataset_lists_bad_rows_and_writes_nothing(tmp_path: Path) -> None:
    root = make_csv(tmp_path / "csv", ["x.jpg,dog", "missing.jpg,dog", "x.jpg,cat"])
    result = _invoke(["import-dataset", "--data", str(root), "--out", str(tmp_path / "voc")])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len([ln for ln in lines if "labels.csv:" in ln]) == 2
    assert lines[-1].startswith("Error:") and "2 bad rows" in lines[-1]
    assert not (tmp_path / "voc").exists()
    assert not list(tmp_path.glob(".voc*"))


def test_import_dataset_coco_and_csv(tmp_path: Path) -> None:
    source = open_dataset(make_coco(tmp_path / "coco"))
    result = _invoke(["import-dataset", "--data", str(tmp_path / "coco"), "--out", str(tmp_path / "voc")])
    assert result.exit_code == 0, result.output
    voc = VocDataset(tmp_path / "voc")
    assert voc.classes == source.classes and voc.splits() == ["train", "val"]
    for image_id in ("a", "b", "c"):
        assert voc.labels(image_id) == source.labels(image_id)
        assert (voc.read_mask(image_id) == source.read_mask(image_id)).all()
    result = _invoke(["import-dataset", "--data", str(tmp_path / "coco"), "--out", str(tmp_path / "voc")])
    assert result.exit_code == 2 and "already exists" in result.output

    root = make_csv(tmp_path / "csv", ["x.jpg,dog;cat", "photos/y.jpg,cat"])
    assert _invoke(["import-dataset", "--data", str(root), "--out", str(tmp_path / "v2")]).exit_code == 0
    voc = VocDataset(tmp_path / "v2")
    assert voc.ids("train") == ["x", "y"] and voc.labels("x") == [1, 2]
    assert voc.image_path("y").name == "y.jpg" and not (tmp_path / "v2" / "SegmentationClass").exists()


def test_eval_cams_without_masks_reports_otsu_only(tmp_path: Path) -> None:
    root = make_csv(tmp_path / "csv", ["x.jpg,dog", "photos/y.jpg,cat"])
    work = tmp_path / "work"
    rng = np.random.default_rng(0)
    for image_id, cls in (("x", 2), ("y", 1)):
        low, high = rng.uniform(0, 0.2, (1, H, W // 2)), rng.uniform(0.7, 1, (1, H, W - W // 2))
        cams = np.concatenate([low, high], 2)
        write_cams(work / "cams" / f"{image_id}.npz", np.array([cls]), cams)
    result = _invoke(["eval-cams", "--data", str(root), "--workdir", str(work)])
    assert result.exit_code == 0, result.output
    assert "nothing to score against" in result.output
    saved = json.loads((work / "eval" / "cams_train.json").read_text())
    assert saved["miou"] is None and saved["ground_truth"] is False
    assert 0.18 <= saved["otsu"]["threshold"] < 0.7  # between the two modes
    assert 0.18 <= saved["otsu_per_image"]["mean_threshold"] < 0.7
    assert "each image's own CAMs" in result.output


@pytest.mark.integration
def test_csv_dataset_without_masks_runs_make_pseudo_and_train_seg(tmp_path: Path) -> None:
    make_toy_dataset(tmp_path / "toy", num_train=12, num_val=2, size=64)
    voc = VocDataset(tmp_path / "toy")
    root = tmp_path / "csv"
    rows = []
    for image_id in voc.ids("train"):
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "images" / f"{image_id}.jpg").write_bytes(voc.image_path(image_id).read_bytes())
        rows.append(f"images/{image_id}.jpg," + ";".join(voc.classes[c] for c in voc.labels(image_id)))
    (root / "labels.csv").write_text("image,labels\n" + "\n".join(rows) + "\n")
    work = tmp_path / "work"
    tiny = ["--backbone", "tiny", "--epochs", "1", "--batch-size", "4", "--workers", "0"]
    steps = [["train-cls", *tiny, "--crop-size", "64"],
             ["make-pseudo", "--epochs", "1", "--batch-size", "4", "--crf-iters", "2", "--workers", "0"],
             ["train-seg", *tiny, "--crop-size", "64"]]
    for step in steps:
        result = _invoke(["--device", "cpu", step[0], "--data", str(root), "--workdir", str(work), *step[1:]])
        assert result.exit_code == 0, (step, result.output)
    assert sorted(p.stem for p in (work / "pseudo").glob("*.png")) == voc.ids("train")
    assert read_mask(work / "pseudo" / f"{voc.ids('train')[0]}.png").max() <= len(voc.classes) - 1
    assert (work / "seg" / "model.pt").exists()


def coco_from_voc(voc: VocDataset, ids: list[str], root: Path) -> Path:
    """The images of ``ids`` re-packed as COCO train2014: one RLE instance per class region,
    the 255 regions as crowd of an extra category, category ids 3, 5, 7, ... by name."""
    (root / "train2014").mkdir(parents=True)
    categories = [{"id": 2 * k + 1, "name": name} for k, name in enumerate(voc.classes[1:], 1)]
    categories.append({"id": 99, "name": "other"})
    images, annotations = [], []
    for n, image_id in enumerate(ids):
        (root / "train2014" / f"{image_id}.jpg").write_bytes(voc.image_path(image_id).read_bytes())
        mask = voc.read_mask(image_id)
        images.append({"id": n, "file_name": f"{image_id}.jpg", "height": mask.shape[0],
                       "width": mask.shape[1]})
        for value in np.unique(mask):
            if value == 0:
                continue
            rle = coco_mask.encode(np.asfortranarray((mask == value).astype(np.uint8)))
            annotations.append({"id": len(annotations), "image_id": n, "area": int((mask == value).sum()),
                                "category_id": 99 if value == 255 else 2 * int(value) + 1,
                                "iscrowd": int(value == 255),
                                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}})
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_train2014.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return root


@pytest.mark.integration
def test_coco128_as_coco_agrees_with_its_voc_copy(coco128: Path, tmp_path: Path) -> None:
    voc = VocDataset(coco128)
    ids = voc.ids("train")[:12]
    data = open_dataset(coco_from_voc(voc, ids, tmp_path / "coco"))
    to_voc = np.full(256, 255, np.uint8)
    to_voc[0] = 0
    for index, name in enumerate(data.classes):
        if name in voc.classes:
            to_voc[index] = voc.classes.index(name)
    assert data.ids("train") == ids
    for image_id in ids:
        shared = [int(c) for c in to_voc[data.labels(image_id)] if c != 255]  # not "other"
        assert sorted(shared) == voc.labels(image_id)
        assert (to_voc[data.read_mask(image_id)] == voc.read_mask(image_id)).all()
    work = ["--data", str(tmp_path / "coco"), "--workdir", str(tmp_path / "work")]
    for step in (["train-cls", "--backbone", "tiny", "--epochs", "1", "--batch-size", "4",
                  "--workers", "0", "--crop-size", "64"],
                 ["dump-cams", "--scales", "1.0", "--workers", "0"], ["eval-cams"]):
        result = _invoke(["--device", "cpu", step[0], *work, *step[1:]])
        assert result.exit_code == 0, (step, result.output)
    scored = json.loads((tmp_path / "work" / "eval" / "cams_train.json").read_text())
    assert scored["images"] == 12 and 0 <= scored["miou"] <= 100


def test_eval_scores_against_a_datasets_masks(tmp_path: Path) -> None:
    data = open_dataset(make_coco(tmp_path / "coco"))
    pred = tmp_path / "pred"
    right = data.read_mask("a")
    write_palette_png(pred / "a.png", np.where(right == 255, 0, right))  # perfect where scored
    wrong = data.read_mask("b")
    write_palette_png(pred / "b.png", np.where(wrong == 3, 1, wrong))  # the dog called a person
    result = _invoke(["eval", "--pred", str(pred), "--data", str(tmp_path / "coco")])
    assert result.exit_code == 0, result.output
    scored = json.loads((pred / "eval.json").read_text())
    assert scored["images"] == 2 and list(scored["per_class"]) == list(data.classes)
    assert scored["per_class"]["car"] == 100.0 and scored["per_class"]["dog"] == 0.0
    neither = _invoke(["eval", "--pred", str(pred)])
    assert neither.exit_code == 2 and "--gt FOLDER or as --data" in neither.output


def test_import_dataset_failing_midway_leaves_nothing(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from wsss_cli.workflows import import_dataset

    root = make_csv(tmp_path / "csv", ["x.jpg,dog", "photos/y.jpg,cat"])
    calls = []

    def failing_link(source: Path, path: Path) -> None:
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(source.read_bytes())

    monkeypatch.setattr(import_dataset, "link_file", failing_link)
    result = _invoke(["import-dataset", "--data", str(root), "--out", str(tmp_path / "voc")])
    assert result.exit_code == 2 and "No space left" in result.output
    assert len(calls) == 2 and not (tmp_path / "voc").exists() and not list(tmp_path.glob(".voc*"))
