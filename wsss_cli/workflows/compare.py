"""compare: several CAM methods trained and scored on one dataset with one protocol.

Each entry of ``--methods`` is a CAM method (``train-cls --method``) or ``mixup`` (the
plain CAM trained with ``--mixup 1``). For each: ``train-cls --out cls_<name>`` (cached:
a model made with the same settings is reused), ``dump-cams --out cams_<name>``, and
eval-cams's protocol: the best background threshold (chosen with the ground truth) and
Otsu's threshold of the CAM values (what a user without ground truth can apply), each
with mIoU and class-agnostic foreground precision and recall. One table, and
``WORKDIR/eval/compare_<split>.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsss_cli.cam_methods import CAM_METHODS
from wsss_cli.data.dataset import open_dataset
from wsss_cli.errors import WsssError
from wsss_cli.evaluation import format_table
from wsss_cli.options import option
from wsss_cli.runtime import Runtime
from wsss_cli.stages import dump_cams, eval_cams, train_cls
from wsss_cli.stages.common import (
    amp_option,
    backbone_option,
    data_option,
    overwrite_option,
    workdir_option,
    workers_option,
)
from wsss_cli.workdir import Layout, Workdir, write_json

# compare entries that are a method with train-cls options rather than a method
VARIANTS: dict[str, dict[str, Any]] = {"mixup": {"method": "cam", "mixup": 1.0}}
DEFAULT_METHODS = "cam,seam,has,acol,erasing,mdc,mixup"


@dataclass(frozen=True, kw_only=True)
class CompareConfig:
    data: Path = data_option()
    workdir: Path = workdir_option()
    methods: str = option(DEFAULT_METHODS, "Comma-separated CAM methods (train-cls --method) and "
                                           "mixup (the plain CAM with --mixup 1).", metavar="NAMES")
    split: str = option("train", "Split to train on and score (needs its masks).")
    backbone: str = backbone_option()
    pretrained: str | None = option(None, "Initial backbone weights.", metavar="PATH|imagenet|none",
                                    default_text="each method's preset")
    epochs: int | None = option(None, "Training epochs of every method.", min=1,
                                default_text="each method's preset")
    batch_size: int | None = option(None, "Images per step.", min=1,
                                    default_text="each method's preset")
    scales: tuple[float, ...] = option(dump_cams.DumpCamsConfig.scales,
                                       "dump-cams's inference scales (each also flipped).")
    amp: bool = amp_option()
    workers: int = workers_option()
    overwrite: bool = overwrite_option()
    runtime: Runtime = field(default=Runtime(), metadata={"cli": False})

    def names(self) -> list[str]:
        names = [n.strip() for n in self.methods.split(",") if n.strip()]
        known = [*CAM_METHODS.names(), *VARIANTS]
        unknown = [n for n in names if n not in known]
        if unknown or not names:
            raise WsssError(f"--methods: unknown {', '.join(unknown) or '(none given)'}; choose "
                            f"from {', '.join(known)}")
        return list(dict.fromkeys(names))


HEADERS = ["method", "best thr", "mIoU", "fg prec", "fg rec", "Otsu thr", "mIoU", "fg prec",
           "fg rec", "train s"]


def run(cfg: CompareConfig) -> Path:
    """Train, dump and score every method; returns ``WORKDIR/eval/compare_<split>.json``."""
    data = open_dataset(cfg.data)
    if not data.has_masks(data.ids(cfg.split)):
        raise WsssError(f"--split {cfg.split}: compare scores against ground-truth masks and "
                        f"{cfg.data} has none for it")
    rows = [_compare_one(cfg, name) for name in cfg.names()]
    out = Layout(cfg.workdir).eval(f"compare_{cfg.split}")
    write_json(out, {"split": cfg.split, "backbone": cfg.backbone, "methods": rows})
    print(format_table(HEADERS, [table_row(r) for r in rows]))
    print("best thr: chosen with the ground truth; Otsu thr: from the CAMs alone")
    return out


def _compare_one(cfg: CompareConfig, name: str) -> dict[str, Any]:
    common = dict(data=cfg.data, workdir=cfg.workdir, split=cfg.split, overwrite=cfg.overwrite,
                  runtime=cfg.runtime)
    model = train_cls.run(train_cls.TrainClsConfig(
        **common, **VARIANTS.get(name, {"method": name}), backbone=cfg.backbone,
        pretrained=cfg.pretrained, epochs=cfg.epochs, batch_size=cfg.batch_size, amp=cfg.amp,
        workers=cfg.workers, out=f"cls_{name}"))
    dump_cams.run(dump_cams.DumpCamsConfig(**common, cls_model=model, scales=cfg.scales,
                                           amp=cfg.amp, workers=cfg.workers, out=f"cams_{name}"))
    result = eval_cams.evaluate(eval_cams.EvalCamsConfig(
        data=cfg.data, workdir=cfg.workdir, split=cfg.split, runtime=cfg.runtime,
        cams=f"cams_{name}"))
    keys = ("miou", "fg_precision", "fg_recall")
    return {"method": name, "best": {"threshold": result["best_threshold"],
                                     **{k: result[k] for k in keys}},
            "otsu": result["otsu"], "train_seconds": training_seconds(cfg.workdir, f"cls_{name}")}


def training_seconds(workdir: Path, folder: str) -> float:
    """What training the classifier in ``folder`` took: its run's seconds, plus those of
    its steps' runs (adversarial erasing), as recorded in ``state.json``."""
    state = Workdir(workdir).state()
    return round(sum(entry.get("seconds") or 0 for name, entry in state.items()
                     if name.split(":", 1)[-1] == folder
                     or name.split(":", 1)[-1].startswith(f"{folder}/")), 1)


def table_row(result: dict[str, Any]) -> list[Any]:
    best, otsu = result["best"], result["otsu"] or {}
    return [result["method"], best["threshold"], best["miou"], best["fg_precision"],
            best["fg_recall"], otsu.get("threshold", "-"), otsu.get("miou", "-"),
            otsu.get("fg_precision", "-"), otsu.get("fg_recall", "-"), result["train_seconds"]]
