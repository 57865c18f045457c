"""The dataset layer: layout, labels from every source, image conversions, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from wsss_cli.data.augment import AugmentConfig, augment
from wsss_cli.data.dataset import VocDataset
from wsss_cli.data.io import read_image, read_mask, voc_palette, write_palette_png
from wsss_cli.data.toy import TOY_CLASSES, make_toy_dataset
from wsss_cli.errors import WsssError


def _tiny_voc(root: Path, n: int = 3) -> Path:
    rng = np.random.default_rng(0)
    (root / "JPEGImages").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    ids = []
    for i in range(n):
        image_id = f"img{i}"
        cv2.imwrite(str(root / "JPEGImages" / f"{image_id}.jpg"),
                    rng.integers(0, 255, (20, 30, 3), dtype=np.uint8))
        mask = np.zeros((20, 30), np.uint8)
        mask[5:10, 5:10] = 1 + i
        mask[0, 0] = 255
        write_palette_png(root / "SegmentationClass" / f"{image_id}.png", mask)
        ids.append(image_id)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(ids) + "\n")
    return root


def test_labels_come_from_masks_when_nothing_else(tmp_path):
    data = VocDataset(_tiny_voc(tmp_path))
    assert data.num_classes == 21
    assert data.ids("train") == ["img0", "img1", "img2"]
    assert data.labels("img2") == [3]
    np.testing.assert_array_equal(np.nonzero(data.label_vector("img1"))[0], [1])


def test_labels_from_json_with_names_and_indices(tmp_path):
    root = _tiny_voc(tmp_path)
    (root / "cls_labels.json").write_text(json.dumps({"img0": ["dog", 15], "img1": [], "img2": [0]}))
    data = VocDataset(root)
    assert data.labels("img0") == [12, 15]
    assert data.labels("img1") == []
    assert data.labels("img2") == []  # background is not an image label


def test_labels_from_xml(tmp_path):
    root = _tiny_voc(tmp_path)
    (root / "Annotations").mkdir()
    (root / "Annotations" / "img0.xml").write_text(
        "<annotation><object><name>cat</name></object><object><name>person</name></object>"
        "<object><name>cat</name></object></annotation>")
    assert VocDataset(root).labels("img0") == [8, 15]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda r: (r / "cls_labels.json").write_text('{"img0": ["unicorn"]}'), "unknown class name"),
        (lambda r: (r / "cls_labels.json").write_text('{"img0": [21]}'), "out of range"),
        (lambda r: (r / "ImageSets/Segmentation/train.txt").write_text("img0\nnope\n"), "nope"),
        (lambda r: (r / "ImageSets/Segmentation/train.txt").write_text("\n"), "empty split"),
        (lambda r: (r / "ImageSets/Segmentation/train.txt").write_text("../x\n"), "escape"),
    ],
)
def test_bad_dataset_inputs_are_one_line_user_errors(tmp_path, setup, message):
    root = _tiny_voc(tmp_path)
    setup(root)
    data = VocDataset(root)
    with pytest.raises(WsssError, match=message) as info:
        for image_id in data.ids("train"):
            data.labels(image_id)
    assert "\n" not in info.value.message


def test_mask_checks(tmp_path):
    root = _tiny_voc(tmp_path)
    bad = np.zeros((20, 30), np.uint8)
    bad[3, 3] = 40
    write_palette_png(root / "SegmentationClass" / "img0.png", bad)
    data = VocDataset(root)
    with pytest.raises(WsssError, match="class index 40 out of range"):
        data.read_mask("img0")
    with pytest.raises(WsssError, match="differs from its image"):
        data.read_mask("img1", shape=(21, 30))


def test_image_modes_are_converted(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 255, (16, 24, 3), dtype=np.uint8)
    Image.fromarray(rgb).convert("L").save(tmp_path / "gray.jpg")
    Image.fromarray(rgb).convert("RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg")
    for name in ("gray.jpg", "rgba.png", "cmyk.jpg"):
        image = read_image(tmp_path / name)
        assert image.shape == (16, 24, 3) and image.dtype == np.uint8
    gray = read_image(tmp_path / "gray.jpg")
    assert (gray[..., 0] == gray[..., 1]).all()
    # CMYK JPEGs must come back with roughly the original colours, not inverted ones
    assert np.abs(read_image(tmp_path / "cmyk.jpg").astype(int) - rgb).mean() < 40


def test_truncated_and_garbage_images(tmp_path):
    rgb = np.full((64, 64, 3), 128, np.uint8)
    Image.fromarray(rgb).save(tmp_path / "ok.jpg")
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    with pytest.raises(WsssError, match="truncated JPEG"):
        read_image(tmp_path / "cut.jpg")
    with pytest.raises(WsssError, match="not a readable image"):
        read_image(tmp_path / "junk.jpg")
    with pytest.raises(WsssError, match="not found"):
        read_image(tmp_path / "missing.jpg")


def test_palette_png_roundtrip(tmp_path):
    mask = np.arange(0, 256, dtype=np.uint8).reshape(16, 16)
    write_palette_png(tmp_path / "m.png", mask)
    with Image.open(tmp_path / "m.png") as im:
        assert im.mode == "P"
        assert im.getpalette()[3 * 15 : 3 * 16] == list(voc_palette()[15])
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), mask)
    assert not list(tmp_path.glob(".*tmp"))


def test_augment_is_deterministic_and_keeps_labels_aligned():
    image = np.zeros((60, 80, 3), np.uint8)
    image[20:40, 30:50] = 255
    label = np.zeros((60, 80), np.uint8)
    label[20:40, 30:50] = 3
    cfg = AugmentConfig(crop=48, resize_long=(60, 100))
    a = augment(image, label, cfg, np.random.default_rng([1, 2, 3]))
    b = augment(image, label, cfg, np.random.default_rng([1, 2, 3]))
    np.testing.assert_array_equal(a[0], b[0])
    out, out_label = a
    assert out.shape == (3, 48, 48) and out_label.shape == (48, 48)
    assert set(np.unique(out_label)) <= {0, 3, 255}
    # bright object pixels and label 3 coincide (jitter changes brightness, not position)
    assert out[0][out_label == 3].mean() > out[0][out_label == 0].mean()


def test_toy_dataset_layout(tmp_path):
    make_toy_dataset(tmp_path / "toy", num_train=6, num_val=2, size=64)
    data = VocDataset(tmp_path / "toy")
    assert data.classes == TOY_CLASSES
    assert len(data.ids("train")) == 6 and len(data.ids("val")) == 2
    for image_id in data.ids("train"):
        image = data.read_image(image_id)
        mask = data.read_mask(image_id, image.shape[:2])
        assert data.labels(image_id) == [int(c) for c in np.unique(mask) if c > 0]
