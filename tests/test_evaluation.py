"""The CAM threshold sweep equals evaluating each threshold on its own."""

from __future__ import annotations

import numpy as np

from wsss_cli import ops
from wsss_cli.evaluation import ThresholdSweep, format_iou_table, image_otsu_labels, iou_summary


def _brute_force(gt, cams, classes, t, k):
    if len(classes):
        pred = np.where(cams.max(0) > t, np.asarray(classes)[cams.argmax(0)], 0)
    else:
        pred = np.zeros_like(gt)
    return ops.confusion_matrix(pred, gt, k)


def test_sweep_matches_brute_force():
    rng = np.random.default_rng(0)
    thresholds = [0.0, 0.1, 0.25, 0.5, 0.6]
    sweep = ThresholdSweep(thresholds, 6)
    want = np.zeros((len(thresholds), 6, 6), np.int64)
    for classes in ([2, 5], [1], []):
        gt = rng.integers(0, 6, (12, 15)).astype(np.uint8)
        gt[0, :4] = 255
        cams = rng.random((len(classes), 12, 15)).astype(np.float32)
        cams[:, 1, 1] = 0.25  # ties with a threshold go to background
        sweep.add(gt, cams, np.array(classes))
        for j, t in enumerate(thresholds):
            want[j] += _brute_force(gt, cams, classes, t, 6)
    np.testing.assert_array_equal(sweep.confusions(), want)


def test_summary_and_table():
    confusion = np.array([[5, 1, 0], [1, 3, 0], [0, 0, 0]])
    summary = iou_summary(confusion, ("background", "a", "b"))
    assert summary["per_class"]["b"] is None
    assert abs(summary["miou"] - 100 * (5 / 7 + 3 / 5) / 2) < 1e-3
    table = format_iou_table(summary)
    assert table.splitlines()[-1] == f"mIoU: {summary['miou']:.2f}"


def test_image_otsu_labels_thresholds_each_image_on_its_own_values():
    cams = np.full((2, 4, 6), 0.1, np.float32)
    cams[0, :, :2] = 0.9  # class 3 on the left
    cams[1, :, 4:] = 0.6  # class 5 on the right, weaker
    label, threshold = image_otsu_labels(cams, np.array([3, 5]))
    assert 0.1 <= threshold < 0.6
    want = np.zeros((4, 6), np.uint8)
    want[:, :2], want[:, 4:] = 3, 5
    np.testing.assert_array_equal(label, want)
    # the same maps scaled down: a global threshold would lose them, this rule does not
    np.testing.assert_array_equal(image_otsu_labels(cams * 0.3, np.array([3, 5]))[0], want)
    flat, flat_threshold = image_otsu_labels(np.full((1, 3, 3), 0.7, np.float32), np.array([2]))
    assert flat_threshold == 0.5 and (flat == 2).all()
    empty, none = image_otsu_labels(np.zeros((0, 3, 3), np.float32), np.array([], np.int64))
    assert none is None and (empty == 0).all()
