"""mIoU bookkeeping shared by eval, eval-cams and the demo: sweeps, summaries, tables."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from wsss_cli import ops
from wsss_cli.data.io import read_mask
from wsss_cli.errors import WsssError
from wsss_cli.runtime import Runtime


def iou_summary(confusion: np.ndarray, classes: Sequence[str]) -> dict:
    """``{"miou": %, "per_class": {name: % or None}, "pixels": n}`` of a confusion matrix."""
    mean, per_class = ops.miou(confusion)
    return {
        "miou": round(100 * mean, 4),
        "per_class": {name: None if np.isnan(v) else round(100 * float(v), 4)
                      for name, v in zip(classes, per_class, strict=True)},
        "pixels": int(confusion.sum()),
    }


def format_iou_table(summary: dict) -> str:
    """The per-class IoU table followed by ``mIoU: xx.xx``."""
    width = max(len(n) for n in summary["per_class"])
    lines = [f"{'class':<{width}}  IoU"]
    for name, value in summary["per_class"].items():
        lines.append(f"{name:<{width}}  {'  -  ' if value is None else f'{value:5.2f}'}")
    lines.append(f"mIoU: {summary['miou']:.2f}")
    return "\n".join(lines)


def format_table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A plain aligned text table."""
    cells = [[str(h) for h in headers]] + [[f"{c:.2f}" if isinstance(c, float) else str(c)
                                            for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True))  # noqa: E731
    return "\n".join([fmt(cells[0]), fmt(["-" * w for w in widths])] + [fmt(r) for r in cells[1:]])


def foreground_quality(confusion: np.ndarray) -> dict[str, float]:
    """Class-agnostic ``{"fg_precision": %, "fg_recall": %}`` of a confusion matrix
    ``[truth, prediction]`` (class 0 = background): how much of what is marked as an
    object is one, and how much of the objects is marked."""
    both = int(confusion[1:, 1:].sum())
    marked, objects = int(confusion[:, 1:].sum()), int(confusion[1:, :].sum())
    return {"fg_precision": round(100 * both / max(marked, 1), 4),
            "fg_recall": round(100 * both / max(objects, 1), 4)}


class ThresholdSweep:
    """Confusion matrices of CAM pseudo-labels at many background thresholds at once.

    At threshold t a pixel is background unless its largest CAM exceeds t (a tie goes
    to background, as argmax over [t, CAM_1, ...] does). Each image costs one
    histogram over (ground truth, best class, number of thresholds below the score),
    whatever the number of thresholds.
    """

    SCORE_BINS = 100  # the histogram of scores in [0, 1] that Otsu's rule reads

    def __init__(self, thresholds: Sequence[float], num_classes: int):
        self.thresholds = np.asarray(thresholds, np.float64)
        self.k = num_classes
        self.t = len(self.thresholds)
        self.hist = np.zeros((self.k, self.k, self.t + 1), np.int64)
        self.scores = np.zeros(self.SCORE_BINS, np.int64)  # every pixel's largest CAM, no truth

    def add(self, gt: np.ndarray, cams: np.ndarray, classes: np.ndarray) -> None:
        """``gt`` ``[H, W]`` (255 ignored), ``cams`` ``[n, H, W]`` of 1-based ``classes`` ``[n]``."""
        self.add_scores(cams, classes)
        valid = gt != 255
        g = gt[valid].astype(np.int64)
        if len(classes) == 0:
            best = np.zeros_like(g)
            above = np.zeros_like(g)
        else:
            scores = cams[:, valid]
            best = np.asarray(classes, np.int64)[scores.argmax(0)]
            above = np.searchsorted(self.thresholds, scores.max(0), side="left")
        index = (g * self.k + best) * (self.t + 1) + above
        self.hist += np.bincount(index, minlength=self.hist.size).reshape(self.hist.shape)

    def add_scores(self, cams: np.ndarray, classes: np.ndarray) -> None:
        """Only the scores Otsu's rule reads (no ground truth): ``cams`` ``[n, H, W]``."""
        if len(classes):
            top = np.clip((cams.max(0) * self.SCORE_BINS).astype(np.int64), 0, self.SCORE_BINS - 1)
            self.scores += np.bincount(top.ravel(), minlength=self.SCORE_BINS)

    def otsu_index(self) -> int | None:
        """The sweep's threshold nearest Otsu's threshold of the largest CAM of every
        pixel of the images with classes: a background threshold chosen from the maps
        alone, no ground truth. None when the scores take fewer than two values."""
        from skimage.filters import threshold_otsu

        centres = (np.arange(self.SCORE_BINS) + 0.5) / self.SCORE_BINS
        if np.count_nonzero(self.scores) < 2:
            return None
        threshold = threshold_otsu(hist=(self.scores, centres))
        return int(np.abs(self.thresholds - threshold).argmin())

    def confusions(self) -> np.ndarray:
        """``[T, K, K]``: the confusion matrix at each threshold."""
        # at threshold j a pixel keeps its class iff more than j thresholds lie below its score
        at_least = np.cumsum(self.hist[..., ::-1], axis=-1)[..., ::-1]  # [K, K, T+1]: c >= c'
        out = np.moveaxis(at_least[..., 1:], -1, 0).copy()  # [T, K, K], foreground part
        out[:, :, 0] = 0  # best class 0 only arises for images without classes: background
        out[:, :, 0] = self.hist.sum(axis=(1, 2))[None, :] - out.sum(-1)
        return out


def image_otsu_labels(cams: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, float | None]:
    """Per-image Otsu: the uint8 label map ``[H, W]`` of CAMs ``[n, H, W]`` of 1-based
    ``classes`` ``[n]`` thresholded at Otsu's threshold of this image's largest-CAM values
    (background where it is not exceeded), and that threshold (None without classes; 0.5
    for a flat map). Needs no ground truth."""
    from skimage.filters import threshold_otsu

    if not len(classes):
        return np.zeros(cams.shape[1:], np.uint8), None
    top = cams.max(0)
    threshold = float(threshold_otsu(top)) if top.max() > top.min() else 0.5
    best = np.asarray(classes, np.uint8)[cams.argmax(0)]
    return np.where(top > threshold, best, 0).astype(np.uint8), threshold


def evaluate_folder(pred: Path, truth: Path | Callable[[str], np.ndarray], ids: list[str],
                    names: tuple[str, ...], runtime: Runtime) -> dict:
    """Accumulate one confusion matrix of ``pred/<id>.png`` over ``ids`` against the ground
    truth: ``truth/<id>.png``, or ``truth(id)`` (a dataset's ``read_mask``); summarise it."""
    confusion = np.zeros((len(names), len(names)), np.int64)
    for image_id in runtime.progress(ids, "eval"):
        p = read_mask(pred / f"{image_id}.png")
        g = truth(image_id) if callable(truth) else read_mask(truth / f"{image_id}.png")
        if p.shape != g.shape:
            raise WsssError(f"{pred / image_id}.png: size {p.shape[::-1]} differs from its "
                            f"ground truth {g.shape[::-1]}")
        try:
            confusion += ops.confusion_matrix(p, g, len(names))
        except ValueError as e:
            raise WsssError(f"{pred / image_id}.png: {e}") from None
    return {**iou_summary(confusion, names), "images": len(ids)}
