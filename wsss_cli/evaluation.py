"""mIoU bookkeeping shared by eval, eval-cams and the demo: sweeps, summaries, tables."""

from __future__ import annotations

from collections.abc import Sequence
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


class ThresholdSweep:
    """Confusion matrices of CAM pseudo-labels at many background thresholds at once.

    At threshold t a pixel is background unless its largest CAM exceeds t (a tie goes
    to background, as argmax over [t, CAM_1, ...] does). Each image costs one
    histogram over (ground truth, best class, number of thresholds below the score),
    whatever the number of thresholds.
    """

    def __init__(self, thresholds: Sequence[float], num_classes: int):
        self.thresholds = np.asarray(thresholds, np.float64)
        self.k = num_classes
        self.t = len(self.thresholds)
        self.hist = np.zeros((self.k, self.k, self.t + 1), np.int64)

    def add(self, gt: np.ndarray, cams: np.ndarray, classes: np.ndarray) -> None:
        """``gt`` ``[H, W]`` (255 ignored), ``cams`` ``[n, H, W]`` of 1-based ``classes`` ``[n]``."""
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

    def confusions(self) -> np.ndarray:
        """``[T, K, K]``: the confusion matrix at each threshold."""
        # at threshold j a pixel keeps its class iff more than j thresholds lie below its score
        at_least = np.cumsum(self.hist[..., ::-1], axis=-1)[..., ::-1]  # [K, K, T+1]: c >= c'
        out = np.moveaxis(at_least[..., 1:], -1, 0).copy()  # [T, K, K], foreground part
        out[:, :, 0] = 0  # best class 0 only arises for images without classes: background
        out[:, :, 0] = self.hist.sum(axis=(1, 2))[None, :] - out.sum(-1)
        return out


def evaluate_folder(pred: Path, gt: Path, ids: list[str], names: tuple[str, ...],
                    runtime: Runtime) -> dict:
    """Accumulate one confusion matrix over ``ids`` and summarise it."""
    confusion = np.zeros((len(names), len(names)), np.int64)
    for image_id in runtime.progress(ids, "eval"):
        p, g = read_mask(pred / f"{image_id}.png"), read_mask(gt / f"{image_id}.png")
        if p.shape != g.shape:
            raise WsssError(f"{pred / image_id}.png: size {p.shape[::-1]} differs from its "
                            f"ground truth {g.shape[::-1]}")
        try:
            confusion += ops.confusion_matrix(p, g, len(names))
        except ValueError as e:
            raise WsssError(f"{pred / image_id}.png: {e}") from None
    return {**iou_summary(confusion, names), "images": len(ids)}
