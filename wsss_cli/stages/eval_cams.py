"""eval-cams: mIoU of the CAMs of a split against ground truth, over background thresholds.

The CAMs have no background channel; a constant threshold t plays that role. The sweep
runs t = 0.00, 0.01, ..., 0.95 (SEAM's and PSA's evaluation range, 0-0.60, widened for
the methods whose maps are min-max normalised) in one pass and reports the best
threshold, chosen with the ground truth, and beside it two rules a user without ground
truth can apply: Otsu's threshold of all the CAM values (``ThresholdSweep.otsu_index``)
and Otsu's threshold of each image's own values (``image_otsu_labels``). With ``crf`` it
also evaluates CAM + dense CRF at the best threshold (background score = the threshold,
normalised per pixel). Without ground-truth masks it says there is nothing to score
against and reports only the thresholds of the two rules.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from joblib import Parallel, delayed

from wsss_cli import ops
from wsss_cli.data.dataset import LabelledDataset, open_dataset
from wsss_cli.errors import WsssError
from wsss_cli.evaluation import (
    ThresholdSweep,
    foreground_quality,
    format_table,
    image_otsu_labels,
    iou_summary,
)
from wsss_cli.inference import Crf, scores_to_label
from wsss_cli.options import option
from wsss_cli.stages.common import GroundTruthConfig, crf_power_option, set_option
from wsss_cli.workdir import ArtifactSet, Layout, read_cams, write_json

THRESHOLDS = tuple(round(0.01 * i, 2) for i in range(96))


@dataclass(frozen=True, kw_only=True)
class EvalCamsConfig(GroundTruthConfig):
    cams: str = set_option(Layout.CAMS, "CAM set to evaluate")
    crf: bool = option(False, "Also evaluate CAM + dense CRF at the best threshold.")
    crf_power: float = crf_power_option()


def _crf_confusion(data: LabelledDataset, cam_set: ArtifactSet, image_id: str, threshold: float,
                   crf: Crf, crf_power: float) -> np.ndarray:
    """Confusion matrix of argmax CRF([t, CAMs]^crf_power normalised per pixel) for one image."""
    classes, cams = read_cams(cam_set.path(image_id))
    image, gt = data.read_image(image_id), data.read_mask(image_id)
    scores = np.concatenate([np.full((1, *gt.shape), threshold, np.float32), cams])
    pred = scores_to_label(image, scores, classes, crf, crf_power)
    return ops.confusion_matrix(pred, gt, data.num_classes)


def otsu_only(cfg: EvalCamsConfig, ids: list[str], cam_set: ArtifactSet, sweep: ThresholdSweep) -> dict:
    """Without ground truth: Otsu's threshold of the CAMs and no score (``miou`` None)."""
    thresholds = []
    for image_id in cfg.runtime.progress(ids, "eval-cams (no ground truth)"):
        classes, cams = read_cams(cam_set.path(image_id))
        sweep.add_scores(cams, classes)
        thresholds.append(image_otsu_labels(cams, classes)[1])
    otsu = sweep.otsu_index()
    result = {"split": cfg.split, "images": len(ids), "ground_truth": False, "miou": None,
              "best_threshold": None, "otsu": None if otsu is None else {"threshold": THRESHOLDS[otsu]},
              "otsu_per_image": {"mean_threshold": _mean(thresholds)}}
    write_json(Layout(cfg.workdir).eval(f"{cfg.cams}_{cfg.split}"), result)
    return result


def _mean(values: list[float | None]) -> float | None:
    """The mean of the values that are not None (images with classes), None if none."""
    known = [v for v in values if v is not None]
    return round(float(np.mean(known)), 4) if known else None


def run(cfg: EvalCamsConfig) -> dict:
    """Evaluate a CAM set, print the sweep; writes and returns ``WORKDIR/eval/<cams>_<split>.json``."""
    result = evaluate(cfg)
    if result["miou"] is None:
        otsu, per_image = result["otsu"], result["otsu_per_image"]["mean_threshold"]
        print(f"no ground-truth masks for --split {cfg.split}: nothing to score against.")
        if otsu is not None:
            print(f"Otsu threshold of all the CAMs: {otsu['threshold']:.2f}; Otsu threshold of each "
                  f"image's own CAMs (recommended, docs/datasets.md): mean {per_image:.2f}")
        return result
    sweep = result["sweep"]
    if not cfg.runtime.quiet:
        print(format_table(["threshold", "mIoU"], [(t, sweep[t]) for t in list(sweep)[::5]]))
    print(f"best threshold {result['best_threshold']:.2f}  mIoU: {result['miou']:.2f}  (chosen "
          "with the ground truth)")
    if result["otsu"] is not None:
        print(f"Otsu threshold {result['otsu']['threshold']:.2f}  mIoU: "
              f"{result['otsu']['miou']:.2f}  (from the CAMs alone)")
    per_image = result["otsu_per_image"]
    if per_image["mean_threshold"] is not None:
        print(f"Otsu threshold per image (mean {per_image['mean_threshold']:.2f})  mIoU: "
              f"{per_image['miou']:.2f}  (from each image's CAMs alone)")
    if cfg.crf:
        print(f"with dense CRF  mIoU: {result['crf']['miou']:.2f}")
    return result


def evaluate(cfg: EvalCamsConfig) -> dict:
    """The numbers of ``run``, written to ``WORKDIR/eval/<cams>_<split>.json``, unprinted."""
    data = open_dataset(cfg.data)
    ids = data.ids(cfg.split)
    layout = Layout(cfg.workdir)
    cam_set = layout.cams(cfg.cams)
    sweep = ThresholdSweep(THRESHOLDS, data.num_classes)
    if not data.has_masks(ids):
        return otsu_only(cfg, ids, cam_set, sweep)
    per_image = np.zeros((data.num_classes, data.num_classes), np.int64)
    thresholds = []
    for image_id in cfg.runtime.progress(ids, "eval-cams"):
        classes, cams = read_cams(cam_set.path(image_id))
        gt = data.read_mask(image_id)
        if cams.shape[1:] != gt.shape and len(classes):
            raise WsssError(f"{cam_set.path(image_id)}: CAM size {cams.shape[1:]} differs from "
                            f"its mask {gt.shape}")
        sweep.add(gt, cams, classes)
        label, threshold = image_otsu_labels(cams, classes)
        per_image += ops.confusion_matrix(label, gt, data.num_classes)
        thresholds.append(threshold)
    confusions = sweep.confusions()
    mious = [iou_summary(c, data.classes)["miou"] for c in confusions]
    best, otsu = int(np.argmax(mious)), sweep.otsu_index()
    result = {
        "split": cfg.split,
        "images": len(ids),
        "best_threshold": THRESHOLDS[best],
        **iou_summary(confusions[best], data.classes),
        **foreground_quality(confusions[best]),
        "otsu": None if otsu is None else {"threshold": THRESHOLDS[otsu], "miou": mious[otsu],
                                           **foreground_quality(confusions[otsu])},
        "otsu_per_image": {"mean_threshold": _mean(thresholds),
                           "miou": iou_summary(per_image, data.classes)["miou"],
                           **foreground_quality(per_image)},
        "sweep": {f"{t:.2f}": m for t, m in zip(THRESHOLDS, mious, strict=True)},
    }
    if cfg.crf:
        crf = Crf.of(cfg)
        jobs = Parallel(n_jobs=crf.jobs(cfg.jobs), return_as="generator_unordered")(
            delayed(_crf_confusion)(data, cam_set, i, THRESHOLDS[best], crf, cfg.crf_power)
            for i in ids)
        confusion = sum(cfg.runtime.progress(jobs, "eval-cams crf", total=len(ids)))
        result["crf"] = iou_summary(confusion, data.classes)
    write_json(layout.eval(f"{cfg.cams}_{cfg.split}"), result)
    return result
