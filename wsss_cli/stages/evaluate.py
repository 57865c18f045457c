"""eval: mIoU of a folder of predicted class-index PNGs against a ground-truth folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsss_cli import ops
from wsss_cli.data.dataset import VOC_CLASSES
from wsss_cli.data.io import read_mask
from wsss_cli.errors import WsssError
from wsss_cli.evaluation import format_iou_table, iou_summary
from wsss_cli.runtime import Runtime
from wsss_cli.workdir import write_json


@dataclass(frozen=True)
class EvalConfig:
    pred: Path
    gt: Path
    num_classes: int | None = None  # default: len(classes file) or 21
    classes: Path | None = None  # classes.txt, background first
    ids: Path | None = None  # a split file; default every PNG in pred
    out: Path | None = None  # default PRED/eval.json
    runtime: Runtime = Runtime()


def class_names(cfg: EvalConfig) -> tuple[str, ...]:
    if cfg.classes is not None:
        names = tuple(n.strip() for n in Path(cfg.classes).read_text().splitlines() if n.strip())
    else:
        names = VOC_CLASSES
    n = cfg.num_classes or len(names)
    if n != len(names):
        names = tuple(f"class{i}" for i in range(n))
    return names


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


def run(cfg: EvalConfig) -> dict:
    pred, gt = Path(cfg.pred), Path(cfg.gt)
    for folder, option in ((pred, "--pred"), (gt, "--gt")):
        if not folder.is_dir():
            raise WsssError(f"{option} {folder}: not a folder")
    if cfg.ids is not None:
        ids = [ln.split()[0] for ln in Path(cfg.ids).read_text().splitlines() if ln.strip()]
    else:
        ids = sorted(p.stem for p in pred.glob("*.png"))
    if not ids:
        raise WsssError(f"--pred {pred}: no PNG predictions to evaluate")
    result = evaluate_folder(pred, gt, ids, class_names(cfg), cfg.runtime)
    write_json(Path(cfg.out or pred / "eval.json"), result)
    print(format_iou_table(result))
    return result
