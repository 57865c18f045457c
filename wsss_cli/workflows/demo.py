"""demo: the whole pipeline on the built-in toy dataset, on the CPU, with a result table.

Every step is an ordinary stage run into ``WORKDIR``, so a second ``wsss demo`` reuses
what the first one finished.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from wsss_cli.data.dataset import open_dataset
from wsss_cli.data.toy import make_toy_dataset
from wsss_cli.evaluation import evaluate_folder, format_table
from wsss_cli.options import option
from wsss_cli.runtime import Runtime
from wsss_cli.stages import (
    dump_cams,
    eval_cams,
    make_aff_labels,
    predict,
    random_walk,
    report,
    train_aff,
    train_cls,
    train_seg,
)
from wsss_cli.walk import PRESETS as WALK_PRESETS
from wsss_cli.workdir import Layout, write_json
from wsss_cli.workflows import make_pseudo

# the demo's schedule: shorter than the tiny presets, with the same table to within a
# point, so that it fits in minutes on 2 cores (docs/results.md#demo)
EPOCHS = {"train-cls": 12, "train-aff": 4, "train-seg": 12}


@dataclass(frozen=True, kw_only=True)
class DemoConfig:
    workdir: Path = option(Path("wsss-demo"), "Where the toy data and all artifacts go.",
                           file_okay=False)
    num_train: int = option(300, "Toy training images.", min=16)
    num_val: int = option(100, "Toy validation images.", min=4)
    epochs: int | None = option(None, "Epochs of each training stage (fewer for a quicker, rougher "
                                      "run).", min=1, default_text=", ".join(
                                          f"{n} for {stage}" for stage, n in EPOCHS.items()))
    workers: int = option(2, "DataLoader workers.", min=0)
    jobs: int = option(2, "CPU processes for the per-image stages (CAMs, the walk, the CRF).",
                       min=1)
    cam_methods: bool = option(False, "Also compare CAM methods on the toy split: Grad-CAM and "
                                      "Grad-CAM++ of the classifier, a SEAM classifier, and "
                                      "SEAM's pseudo-labels after the walk (a second table; "
                                      "about 10 more minutes on 2 cores).", is_flag=True)
    runtime: Runtime = field(default=Runtime(), metadata={"cli": False})

    def network_pass(self) -> dict[str, int]:
        """The CAMs', the walks' and predict's network passes: one single-thread process per
        --jobs, no loader processes, beats one process on every core
        (docs/results.md#five-minutes)."""
        return dict(workers=0, processes=self.jobs)

    def epochs_of(self) -> dict[str, int]:
        """Epochs per training stage: ``--epochs`` for all, else the demo's schedule."""
        return {stage: self.epochs or n for stage, n in EPOCHS.items()}


def run(cfg: DemoConfig) -> list[tuple[str, str, float]]:
    """Run every stage on the toy data, write the report; returns and prints
    ``[(stage, split, mIoU)]``."""
    workdir = Path(cfg.workdir)
    root = workdir / "data"
    if not (root / "classes.txt").exists():  # written last by make_toy_dataset
        make_toy_dataset(root, cfg.num_train, cfg.num_val, seed=cfg.runtime.seed,
                         progress=cfg.runtime.progress)
    common = dict(data=root, workdir=workdir, runtime=cfg.runtime)
    epochs = cfg.epochs_of()
    train_cls.run(train_cls.TrainClsConfig(**common, backbone="tiny", pretrained="none",
                                           epochs=epochs["train-cls"], workers=cfg.workers))
    pseudo = make_pseudo.MakePseudoConfig(
        dump_cams=dump_cams.DumpCamsConfig(**common, **cfg.network_pass()),
        make_aff_labels=make_aff_labels.MakeAffLabelsConfig(**common, jobs=cfg.jobs),
        train_aff=train_aff.TrainAffConfig(**common, epochs=epochs["train-aff"], workers=cfg.workers),
        random_walk=random_walk.RandomWalkConfig(**common, crf=True, no_crf_out=Layout.PSEUDO_NO_CRF,
                                                 jobs=1, **cfg.network_pass()),
    )
    make_pseudo.run(pseudo)

    train_seg.run(train_seg.TrainSegConfig(**common, backbone="tiny", epochs=epochs["train-seg"],
                                           workers=cfg.workers))
    for split in ("train", "val"):  # train: compare with the pseudo-labels it learnt from
        # quiet: the demo prints its own table, not predict's per-image class summary
        predict.run(predict.PredictConfig(**common | {"runtime": replace(cfg.runtime, quiet=True)},
                                          split=split, jobs=1, **cfg.network_pass()))

    rows, cam = _evaluate(cfg, workdir, root)
    result = {"table": [{"stage": name, "split": split, "miou": miou} for name, split, miou in rows]}
    methods = _compare_cam_methods(cfg, common, cam) if cfg.cam_methods else []
    if methods:
        result["cam_methods"] = [{"cams": name, "threshold": t, "miou": miou} for name, t, miou in methods]
    write_json(Layout(workdir).eval("demo"), result)
    page = report.run(report.ReportConfig(workdir=workdir, data=root, runtime=cfg.runtime))
    print()
    print(format_table(["stage", "split", "mIoU"], rows))
    if methods:
        print()
        print(format_table(["train split", "best threshold", "mIoU"], methods))
    print(f"report: {page}")
    return rows


# the second table's sets beside the plain CAM's: (row, CAM set, dump-cams options)
CAM_SETS = (("Grad-CAM", "cams_gradcam", {"method": "gradcam"}),
            ("Grad-CAM++", "cams_gradcampp", {"method": "gradcam++"}),
            ("SEAM", "cams_seam", {"cls_model": "cls_seam/model.pt"}))


def _compare_cam_methods(cfg: DemoConfig, common: dict, cam: dict) -> list[tuple[str, str, float]]:
    """``[(CAM set, best threshold, mIoU)]`` of every CAM method on the toy train split (the
    plain CAM's from its evaluation ``cam``), and of SEAM's pseudo-labels (its own affinity
    labels, AffinityNet and walk)."""
    workdir = Path(cfg.workdir)
    train_cls.run(train_cls.TrainClsConfig(**common, backbone="tiny", pretrained="none", method="seam",
                                           epochs=cfg.epochs_of()["train-cls"], workers=cfg.workers,
                                           out="cls_seam"))
    quiet = {**common, "runtime": replace(cfg.runtime, quiet=True)}
    rows = [("CAM", f"{cam['best_threshold']:.2f}", cam["miou"])]
    for name, cams, options in CAM_SETS:
        if "cls_model" in options:
            options = {"cls_model": workdir / options["cls_model"]}
        dump_cams.run(dump_cams.DumpCamsConfig(**common, **cfg.network_pass(), out=cams, **options))
        result = eval_cams.run(eval_cams.EvalCamsConfig(**quiet, cams=cams))
        rows.append((name, f"{result['best_threshold']:.2f}", result["miou"]))
    return [*rows, ("SEAM + walk + CRF (pseudo-labels)", "-", _seam_pseudo_labels(cfg, common))]


def _seam_pseudo_labels(cfg: DemoConfig, common: dict) -> float:
    """make-pseudo's chain on the SEAM CAMs, each set beside the plain CAM's; train mIoU."""
    workdir = Path(cfg.workdir)
    make_aff_labels.run(make_aff_labels.MakeAffLabelsConfig(**common, jobs=cfg.jobs, cams="cams_seam",
                                                            out="aff_labels_seam"))
    train_aff.run(train_aff.TrainAffConfig(**common, epochs=cfg.epochs_of()["train-aff"],
                                           workers=cfg.workers,
                                           aff_labels="aff_labels_seam", out="aff_seam"))
    labels = random_walk.run(random_walk.RandomWalkConfig(
        **common, jobs=1, **cfg.network_pass(), cams="cams_seam",
        aff_model=workdir / "aff_seam" / "model.pt", out="pseudo_seam"))
    data = open_dataset(workdir / "data")
    result = evaluate_folder(labels, workdir / "data" / "SegmentationClass", data.ids("train"),
                             data.classes, cfg.runtime)
    write_json(Layout(workdir).eval("pseudo_seam_train"), result)
    return result["miou"]


def _evaluate(cfg: DemoConfig, workdir: Path, root: Path) -> tuple[list[tuple[str, str, float]], dict]:
    """``[(stage, split, mIoU)]`` of every stage's output, each also in ``eval/*.json``, and
    eval-cams's result for the CAMs."""
    # the CRF as the walk's, so that the two CRF rows differ by the walk alone
    cam = eval_cams.run(eval_cams.EvalCamsConfig(data=root, workdir=workdir, runtime=cfg.runtime,
                                                 crf=True, jobs=cfg.jobs,
                                                 crf_power=WALK_PRESETS["tiny"]["crf_power"]))
    data = open_dataset(root)
    layout = Layout(workdir)
    gt = root / "SegmentationClass"
    rows = [(f"CAM (threshold {cam['best_threshold']:.2f})", "train", cam["miou"]),
            ("CAM + CRF", "train", cam["crf"]["miou"])]
    outputs = (("random walk", layout.labels(Layout.PSEUDO_NO_CRF), "train", "pseudo_nocrf_train"),
               ("random walk + CRF", layout.labels(Layout.PSEUDO), "train", "pseudo_train"),
               ("segmentation net", layout.predictions("train"), "train", "seg_train"),
               ("segmentation net", layout.predictions("val"), "val", "seg_val"))
    for name, labels, split, json_name in outputs:
        result = evaluate_folder(labels.folder, gt, data.ids(split), data.classes, cfg.runtime)
        write_json(layout.eval(json_name), result)
        rows.append((name, split, result["miou"]))
    return rows, cam
