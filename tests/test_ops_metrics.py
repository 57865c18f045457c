"""``ops.confusion_matrix`` / ``ops.miou`` against the golden vectors and by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import assert_close, golden_cases, load_golden

from wsss_cli import ops


@pytest.mark.parametrize("path", golden_cases("confusion_matrix"), ids=lambda p: p.stem)
def test_confusion_and_miou_golden(path):
    _, params, inputs, expected = load_golden(path)
    confusion = ops.confusion_matrix(**inputs, **params)
    assert confusion.dtype == np.int64
    np.testing.assert_array_equal(confusion, expected["confusion"])
    mean, per_class = ops.miou(confusion)
    assert isinstance(mean, float)
    assert_close(np.array(mean), expected["miou"])
    assert_close(per_class, expected["per_class_iou"])


def test_confusion_matches_pixel_loop():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 4, size=(6, 7)).astype(np.uint8)
    gt[rng.random(gt.shape) < 0.2] = 255
    pred = rng.integers(0, 4, size=(6, 7))
    want = np.zeros((4, 4), dtype=np.int64)
    for g, p in zip(gt.ravel(), pred.ravel(), strict=True):
        if g != 255:
            want[g, p] += 1
    np.testing.assert_array_equal(ops.confusion_matrix(pred, gt, 4), want)


def test_confusion_custom_ignore_index():
    gt = np.array([0, 1, 3, 3])
    pred = np.array([0, 1, 1, 2])
    got = ops.confusion_matrix(pred, gt, 3, ignore_index=3)
    np.testing.assert_array_equal(got, [[1, 0, 0], [0, 1, 0], [0, 0, 0]])


@pytest.mark.parametrize("bad", [3, -1])
def test_confusion_rejects_prediction_out_of_range(bad):
    gt = np.array([0, 1, 2, 255])
    pred = np.array([0, 1, bad, 0])
    with pytest.raises(ValueError, match="prediction"):
        ops.confusion_matrix(pred, gt, 3)


def test_confusion_rejects_prediction_out_of_range_at_ignored_pixel():
    with pytest.raises(ValueError, match="prediction"):
        ops.confusion_matrix(np.array([0, 5]), np.array([0, 255]), 3)


def test_confusion_rejects_ground_truth_out_of_range():
    with pytest.raises(ValueError, match="ground truth"):
        ops.confusion_matrix(np.array([0, 1]), np.array([0, 7]), 3)


def test_confusion_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        ops.confusion_matrix(np.zeros((2, 3), int), np.zeros((3, 2), np.uint8), 3)


def test_miou_leaves_absent_classes_out():
    # class 1 never occurs; class 2 is predicted once but never in gt (IoU 0, counted)
    confusion = np.array([[3, 0, 1], [0, 0, 0], [0, 0, 0]])
    mean, per_class = ops.miou(confusion)
    assert per_class[0] == pytest.approx(3 / 4)
    assert math.isnan(per_class[1])
    assert per_class[2] == 0.0
    assert mean == pytest.approx((3 / 4 + 0.0) / 2)


def test_miou_all_absent_is_nan():
    mean, per_class = ops.miou(np.zeros((3, 3), dtype=np.int64))
    assert math.isnan(mean)
    assert np.isnan(per_class).all()
