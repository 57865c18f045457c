"""eval: mIoU of a folder of predicted class-index PNGs against a ground-truth folder, or
against the masks of a dataset (``--data``: any layout, COCO's rendered masks too)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from wsss_cli.data.dataset import VOC_CLASSES, open_dataset
from wsss_cli.errors import WsssError
from wsss_cli.evaluation import evaluate_folder, format_iou_table
from wsss_cli.options import option
from wsss_cli.runtime import Runtime
from wsss_cli.workdir import write_json


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    pred: Path = option(help="Folder of predicted PNGs.", exists=True, file_okay=False)
    gt: Path | None = option(None, "Folder of ground-truth PNGs.", exists=True, file_okay=False,
                             default_text="the masks of --data")
    data: Path | None = option(None, "A dataset (any layout --data reads: VOC, COCO, labels.csv "
                                     "with masks/) whose masks and class names to score against, "
                                     "instead of --gt.", exists=True, file_okay=False)
    num_classes: int | None = option(None, "Classes incl. background.", min=2,
                                     default_text="from --classes, else 21")
    classes: Path | None = option(None, "classes.txt (background first) for the table's names.",
                                  exists=True, dir_okay=False)
    ids: Path | None = option(None, "Split file of ids to evaluate.", exists=True, dir_okay=False,
                              default_text="every PNG in --pred")
    out: Path | None = option(None, "JSON result.", dir_okay=False, default_text="PRED/eval.json")
    runtime: Runtime = field(default=Runtime(), metadata={"cli": False})


def class_names(cfg: EvalConfig) -> tuple[str, ...]:
    if cfg.classes is not None:
        names = tuple(n.strip() for n in Path(cfg.classes).read_text().splitlines() if n.strip())
    else:
        names = VOC_CLASSES
    n = cfg.num_classes or len(names)
    if n != len(names):
        names = tuple(f"class{i}" for i in range(n))
    return names


def run(cfg: EvalConfig) -> dict:
    if (cfg.gt is None) == (cfg.data is None):
        raise WsssError("give the ground truth as --gt FOLDER or as --data DATASET (one of them)")
    pred = Path(cfg.pred)
    for folder, flag in ((pred, "--pred"), (cfg.gt, "--gt")):
        if folder is not None and not Path(folder).is_dir():
            raise WsssError(f"{flag} {folder}: not a folder")
    if cfg.ids is not None:
        ids = [ln.split()[0] for ln in Path(cfg.ids).read_text().splitlines() if ln.strip()]
    else:
        ids = sorted(p.stem for p in pred.glob("*.png"))
    if not ids:
        raise WsssError(f"--pred {pred}: no PNG predictions to evaluate")
    if cfg.data is not None:
        data = open_dataset(cfg.data)
        names = class_names(cfg) if cfg.classes or cfg.num_classes else data.classes
        result = evaluate_folder(pred, data.read_mask, ids, names, cfg.runtime)
    else:
        result = evaluate_folder(pred, Path(cfg.gt), ids, class_names(cfg), cfg.runtime)
    write_json(Path(cfg.out or pred / "eval.json"), result)
    print(format_iou_table(result))
    return result
