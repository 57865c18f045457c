"""demo: the whole pipeline on the built-in toy dataset, on the CPU, with a result table.

Every step is an ordinary stage run into ``WORKDIR``, so a second ``wsss demo`` reuses
what the first one finished.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from wsss_cli.data.dataset import VocDataset
from wsss_cli.data.toy import make_toy_dataset
from wsss_cli.evaluation import format_table
from wsss_cli.runtime import Runtime
from wsss_cli.stages import (
    dump_cams,
    eval_cams,
    make_aff_labels,
    make_pseudo,
    predict,
    random_walk,
    report,
    train_aff,
    train_cls,
    train_seg,
)
from wsss_cli.stages.evaluate import evaluate_folder
from wsss_cli.workdir import write_json


@dataclass(frozen=True)
class DemoConfig:
    workdir: Path = Path("wsss-demo")
    num_train: int = 300
    num_val: int = 100
    epochs: int | None = None  # None: each training stage's tiny preset
    workers: int = 2
    jobs: int = 2
    runtime: Runtime = Runtime()


def run(cfg: DemoConfig) -> list[tuple[str, str, float]]:
    """Run every stage on the toy data, write the report; returns and prints
    ``[(stage, split, mIoU)]``."""
    workdir = Path(cfg.workdir)
    root = workdir / "data"
    if not (root / "classes.txt").exists():  # written last by make_toy_dataset
        make_toy_dataset(root, cfg.num_train, cfg.num_val, seed=cfg.runtime.seed,
                         progress=cfg.runtime.progress)
    common = dict(data=root, workdir=workdir, runtime=cfg.runtime)
    train_cls.run(train_cls.TrainClsConfig(**common, backbone="tiny", pretrained="none",
                                           epochs=cfg.epochs, workers=cfg.workers))
    pseudo = make_pseudo.MakePseudoConfig(
        dump_cams=dump_cams.DumpCamsConfig(**common, workers=cfg.workers),
        make_aff_labels=make_aff_labels.MakeAffLabelsConfig(**common, jobs=cfg.jobs),
        train_aff=train_aff.TrainAffConfig(**common, epochs=cfg.epochs, workers=cfg.workers),
        random_walk=random_walk.RandomWalkConfig(**common, crf=True, workers=cfg.workers,
                                                 jobs=cfg.jobs),
    )
    make_pseudo.run(pseudo)
    walk_only = random_walk.RandomWalkConfig(**common, crf=False, out="pseudo_nocrf",
                                             workers=cfg.workers, jobs=cfg.jobs)
    random_walk.run(walk_only)

    train_seg.run(train_seg.TrainSegConfig(**common, backbone="tiny", epochs=cfg.epochs,
                                           workers=cfg.workers))
    for split in ("train", "val"):  # train: compare with the pseudo-labels it learnt from
        predict.run(predict.PredictConfig(**common, split=split, workers=cfg.workers,
                                          jobs=cfg.jobs))

    rows = _evaluate(cfg, workdir, root)
    write_json(workdir / "eval" / "demo.json",
               {"table": [{"stage": name, "split": split, "miou": miou} for name, split, miou in rows]})
    page = report.run(report.ReportConfig(workdir=workdir, data=root, runtime=cfg.runtime))
    print()
    print(format_table(["stage", "split", "mIoU"], rows))
    print(f"report: {page}")
    return rows


def _evaluate(cfg: DemoConfig, workdir: Path, root: Path) -> list[tuple[str, str, float]]:
    """``[(stage, split, mIoU)]`` of every stage's output, each also in ``eval/*.json``."""
    cam = eval_cams.run(eval_cams.EvalCamsConfig(data=root, workdir=workdir, runtime=cfg.runtime,
                                                 crf=True, jobs=cfg.jobs))
    data = VocDataset(root)
    gt = root / "SegmentationClass"
    rows = [(f"CAM (threshold {cam['best_threshold']:.2f})", "train", cam["miou"]),
            ("CAM + CRF", "train", cam["crf"]["miou"])]
    outputs = (("random walk", "pseudo_nocrf", "train", "pseudo_nocrf_train"),
               ("random walk + CRF", "pseudo", "train", "pseudo_train"),
               ("segmentation net", "pred/train", "train", "seg_train"),
               ("segmentation net", "pred/val", "val", "seg_val"))
    for name, folder, split, json_name in outputs:
        result = evaluate_folder(workdir / folder, gt, data.ids(split), data.classes, cfg.runtime)
        write_json(workdir / "eval" / f"{json_name}.json", result)
        rows.append((name, split, result["miou"]))
    return rows
