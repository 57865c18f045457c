"""Segmentation metrics: confusion matrix and (mean) intersection over union."""

from __future__ import annotations

import numpy as np


def confusion_matrix(
    pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore_index: int = 255
) -> np.ndarray:
    """Pixel counts by (ground truth, prediction).

    ``pred``, ``gt``: integer arrays of the same shape (any number of dimensions).
    Returns int64 ``[num_classes, num_classes]``, ``confusion[g, p]`` = number of pixels
    with ground truth ``g`` and prediction ``p``; pixels where ``gt == ignore_index`` are
    left out. Raises ``ValueError`` on a shape mismatch, a prediction outside
    ``0 .. num_classes-1`` (anywhere) or a non-ignored ground truth outside that range.
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"pred shape {pred.shape} != gt shape {gt.shape}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    for name, arr in (("pred", pred), ("gt", gt)):
        if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
            raise ValueError(f"{name} must be an integer array, got {arr.dtype}")
    # int64 before comparing, so uint8 inputs cannot wrap and negative values are caught
    pred = pred.reshape(-1).astype(np.int64, copy=False)
    gt = gt.reshape(-1).astype(np.int64, copy=False)
    if pred.size and (pred.min() < 0 or pred.max() >= num_classes):
        bad = pred[(pred < 0) | (pred >= num_classes)][0]
        raise ValueError(f"prediction {bad} outside 0..{num_classes - 1}")
    keep = gt != ignore_index
    pred, gt = pred[keep], gt[keep]
    if gt.size and (gt.min() < 0 or gt.max() >= num_classes):
        bad = gt[(gt < 0) | (gt >= num_classes)][0]
        raise ValueError(
            f"ground truth {bad} outside 0..{num_classes - 1} (and not ignore_index {ignore_index})"
        )
    counts = np.bincount(gt * num_classes + pred, minlength=num_classes * num_classes)
    return counts.astype(np.int64, copy=False).reshape(num_classes, num_classes)


def miou(confusion: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean and per-class intersection over union of a confusion matrix.

    ``confusion``: ``[n, n]`` counts, ``confusion[g, p]``. Per class,
    ``IoU = tp / (row + col - tp)``; a class absent from both ground truth and prediction
    (``row + col == 0``) gets NaN and is left out of the mean. Returns
    ``(mean IoU, per-class IoU float64 [n])``; the mean is NaN when every class is absent.
    """
    confusion = np.asarray(confusion)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"confusion must be square [n, n], got shape {confusion.shape}")
    conf = confusion.astype(np.float64)
    tp = np.diag(conf)
    union = conf.sum(axis=1) + conf.sum(axis=0) - tp
    present = conf.sum(axis=1) + conf.sum(axis=0) > 0
    iou = np.full(len(tp), np.nan)
    iou[present] = tp[present] / union[present]
    mean = float(iou[present].mean()) if present.any() else float("nan")
    return mean, iou
