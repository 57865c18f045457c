"""diagnose: where a PSA run loses, link by link, on the images that have ground truth.

On the same images it measures each link of the chain against the ground truth:
- the affinity labels: the share of pixels that are confident foreground, confident
  background and unsure, and how often each confident label is right;
- AffinityNet: how well ``a_ij`` separates the pixel pairs of one ground-truth class
  from pairs of two classes (ROC AUC), per pair distance on the stride grid;
- the walk: the walk's labels before the CRF against the CAM scores it started from
  (PSA's ``[(1 - max CAM)^alpha, CAMs]`` or IRN's ``[threshold, CAMs / max]``), per
  class, and how much object it gains inside the objects and how much background it
  takes outside them;
- the CRF: the CRF alone on those starting scores against the walk + CRF.
A user with a few labelled images sees where their run loses (docs/methods.md#diagnose).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from joblib import Parallel, delayed

from wsss_cli import ops
from wsss_cli.data.augment import resize
from wsss_cli.data.dataset import LabelledDataset, open_dataset
from wsss_cli.data.io import read_mask
from wsss_cli.errors import WsssError
from wsss_cli.evaluation import format_table, iou_summary
from wsss_cli.inference import Crf, scores_to_label
from wsss_cli.models.affinity_net import pair_affinities
from wsss_cli.models.kinds import AFFINITY, load_model
from wsss_cli.options import option
from wsss_cli.runtime import Runtime
from wsss_cli.stages.common import GroundTruthConfig, set_option
from wsss_cli.walk import affinity_features, auto_walk_scale, scaled_size, walk_preset, walk_start
from wsss_cli.workdir import Layout, Workdir, entry_name, read_cams, write_json

AUC_BINS = 1000  # affinity histogram resolution for the ROC AUC
CHAIN = ("CAM", "CAM + CRF", "walk", "walk + CRF")


@dataclass(frozen=True, kw_only=True)
class DiagnoseConfig(GroundTruthConfig):
    cams: str = set_option(Layout.CAMS, "CAM set the walk started from")
    aff_labels: str = set_option(Layout.AFF_LABELS, "Affinity-label set AffinityNet learnt from")
    walk: str = set_option(Layout.PSEUDO_NO_CRF, "The walk's labels without CRF (random-walk "
                                                 "--no-crf --out NAME)")
    pseudo: str = set_option(Layout.PSEUDO, "The walk + CRF pseudo-labels")
    aff_model: Path | None = option(None, "AffinityNet checkpoint.", dir_okay=False,
                                    default_text="WORKDIR/aff/model.pt")
    images: int | None = option(None, "Diagnose only the first N images of the split.", min=1,
                                default_text="all")


def run(cfg: DiagnoseConfig) -> dict[str, Any]:
    """Measure every link; writes and returns ``WORKDIR/eval/diagnose_<split>.json``."""
    data = open_dataset(cfg.data)
    ids = data.ids(cfg.split)[: cfg.images]
    if not data.has_masks(ids):
        raise WsssError(f"--split {cfg.split}: diagnose needs ground-truth masks under {data.root}")
    layout = Layout(cfg.workdir)
    model_path = Path(cfg.aff_model or layout.model(AFFINITY))
    model, meta = load_model(model_path, (AFFINITY,))
    start = _walk_start(layout, cfg.pseudo, meta["backbone"])
    result: dict[str, Any] = {"split": cfg.split, "images": len(ids), "start": describe_start(start)}
    result["affinity_labels"] = _affinity_label_quality(data, ids, layout.labels(cfg.aff_labels), cfg)
    result["affinity_net"] = _affinity_auc(model, data, ids, cfg.runtime)
    result["chain"] = _chain(data, ids, layout, start, cfg)
    write_json(layout.eval(f"diagnose_{cfg.split}"), result)
    print(format_report(result))
    return result


def _walk_start(layout: Layout, pseudo: str, backbone: str) -> dict[str, Any]:
    """How random-walk started and ended the walk that wrote ``pseudo`` (its settings in
    state.json), else its preset: background, alpha, bg_threshold, crf_power."""
    entry = entry_name("random-walk", pseudo, Layout.PSEUDO)
    recorded = Workdir(layout.root).stage_state(entry).get("settings", {})
    preset = walk_preset(backbone)
    return {k: preset[k] if recorded.get(k) is None else recorded[k] for k in preset}


def describe_start(start: dict[str, Any]) -> str:
    """``[(1 - max CAM)^8, CAMs]``, ``[0.6, CAMs / max]``; with the CRF's power unless 1."""
    if start["background"] == "psa":
        text = f"[(1 - max CAM)^{start['alpha']:g}, CAMs]"
    else:
        text = f"[{start['bg_threshold']:g}, CAMs / max]"
    return text + (f", CRF on scores^{start['crf_power']:g}" if start["crf_power"] != 1 else "")


# ------------------------------------------------------------------ affinity labels


def _affinity_label_quality(data: LabelledDataset, ids: list[str], labels: Any,
                            cfg: DiagnoseConfig) -> dict[str, Any] | None:
    """Shares of confident foreground / background / unsure pixels and the precision of
    each confident kind (foreground: the ground truth's class; background: background)."""
    if labels.missing(ids):
        return None
    counts = np.zeros(5, np.int64)  # fg, fg right, bg, bg right, unsure
    for image_id in cfg.runtime.progress(ids, "diagnose: affinity labels"):
        label, gt = read_mask(labels.path(image_id)), data.read_mask(image_id)
        valid = gt != 255
        fg, bg = valid & (label != 0) & (label != 255), valid & (label == 0)
        counts += [fg.sum(), (fg & (label == gt)).sum(), bg.sum(), (bg & (gt == 0)).sum(),
                   (valid & (label == 255)).sum()]
    total = max(int(counts[[0, 2, 4]].sum()), 1)
    return {"foreground_share": _pct(counts[0], total), "foreground_precision": _pct(counts[1], counts[0]),
            "background_share": _pct(counts[2], total), "background_precision": _pct(counts[3], counts[2]),
            "unsure_share": _pct(counts[4], total)}


def _pct(part: Any, whole: Any) -> float | None:
    return round(100 * float(part) / float(whole), 2) if whole else None


# ------------------------------------------------------------------ AffinityNet


def _affinity_auc(model: torch.nn.Module, data: LabelledDataset, ids: list[str],
                  runtime: Runtime) -> dict[str, Any]:
    """ROC AUC of ``a_ij`` for same-class (positive) against different-class pairs of the
    ground truth on the walk's grid, per pair distance (rounded up to whole cells)."""
    radius = 5
    distances = np.ceil([np.hypot(dy, dx) for dy, dx in ops.affinity_offsets(radius)]).astype(int)
    hist = np.zeros((radius, 2, AUC_BINS), np.int64)  # distance, (negative, positive), value
    device = runtime.torch_device()
    model.to(device)
    for image_id in runtime.progress(ids, "diagnose: AffinityNet"):
        image = data.read_image(image_id)
        scale = auto_walk_scale(*image.shape[:2])
        features = affinity_features(model, image, scale, device)
        grid = _label_grid(data.read_mask(image_id), scale, model.stride, features.shape[-2:])
        if min(grid.shape) < 2 * radius - 1:
            continue
        bg_pos, fg_pos, neg = ops.affinity_labels(grid, radius)
        aff = pair_affinities(features[None], radius)[0].cpu().numpy()
        bins = np.minimum((aff * AUC_BINS).astype(int), AUC_BINS - 1)
        for k, d in enumerate(distances):
            hist[d - 1, 0] += np.bincount(bins[k][neg[k]], minlength=AUC_BINS)
            hist[d - 1, 1] += np.bincount(bins[k][bg_pos[k] | fg_pos[k]], minlength=AUC_BINS)
    per_distance = {str(d + 1): _auc(hist[d]) for d in range(radius) if hist[d].sum()}
    return {"auc": _auc(hist.sum(axis=0)), "auc_by_distance": per_distance,
            "pairs": {"same_class": int(hist[:, 1].sum()), "different_class": int(hist[:, 0].sum())}}


def _label_grid(gt: np.ndarray, scale: float, stride: int, grid: tuple[int, int]) -> np.ndarray:
    """The ground truth at the centres of the walk's grid cells (255 in the padding)."""
    sh, sw = scaled_size(gt.shape, scale)
    resized = np.full((grid[0] * stride, grid[1] * stride), 255, np.uint8)
    resized[:sh, :sw] = resize(gt, (sh, sw), nearest=True)
    return resized[stride // 2 :: stride, stride // 2 :: stride]


def _auc(hist: np.ndarray) -> float | None:
    """ROC AUC from value histograms ``[2, bins]`` (negatives, positives), ties counted half."""
    neg, pos = hist[0].astype(np.float64), hist[1].astype(np.float64)
    if not neg.sum() or not pos.sum():
        return None
    below = np.cumsum(neg) - neg  # negatives strictly below each bin
    return round(100 * float((pos * (below + neg / 2)).sum() / (pos.sum() * neg.sum())), 2)


# ------------------------------------------------------------------ the chain: CAM, walk, CRF


def _chain(data: LabelledDataset, ids: list[str], layout: Layout, start: dict[str, Any],
           cfg: DiagnoseConfig) -> dict[str, Any] | None:
    """mIoU per link (CAM start, CAM + CRF, walk, walk + CRF), each with the share of object
    pixels it labels right (inside) and of background pixels it calls an object (outside)."""
    cams, walk, pseudo = layout.cams(cfg.cams), layout.labels(cfg.walk), layout.labels(cfg.pseudo)
    if cams.missing(ids):
        return None
    crf = Crf.of(cfg)
    jobs = Parallel(n_jobs=crf.jobs(cfg.jobs), return_as="generator_unordered")(
        delayed(_chain_confusions)(data, i, cams, walk, pseudo, start, crf) for i in ids)
    total: dict[str, np.ndarray] = {}
    for confusions in cfg.runtime.progress(jobs, "diagnose: CAM, walk, CRF", total=len(ids)):
        for name, confusion in confusions.items():
            total[name] = total.get(name, 0) + confusion
    return {name: _link_summary(total[name], data.classes) for name in CHAIN if name in total}


def _chain_confusions(data: LabelledDataset, image_id: str, cams: Any, walk: Any, pseudo: Any,
                      start: dict[str, Any], crf: Crf) -> dict[str, np.ndarray]:
    classes, scores = read_cams(cams.path(image_id))
    image, gt = data.read_image(image_id), data.read_mask(image_id)
    scores = walk_start(scores, start["background"], start["alpha"], start["bg_threshold"])
    labels = {"CAM": scores_to_label(image, scores, classes, None),
              "CAM + CRF": scores_to_label(image, scores, classes, crf, start["crf_power"])}
    for name, labelled in (("walk", walk), ("walk + CRF", pseudo)):
        if labelled.path(image_id).exists():
            labels[name] = read_mask(labelled.path(image_id))
    return {name: ops.confusion_matrix(label, gt, data.num_classes) for name, label in labels.items()}


def _link_summary(confusion: np.ndarray, classes: tuple[str, ...]) -> dict[str, Any]:
    objects, background = confusion[1:].sum(), confusion[0].sum()
    return {**iou_summary(confusion, classes),
            "inside_objects": _pct(np.trace(confusion[1:, 1:]), objects),
            "outside_objects": _pct(confusion[0, 1:].sum(), background)}


def format_report(result: dict[str, Any]) -> str:
    """The diagnosis as the terminal shows it."""
    lines = [f"diagnose: {result['images']} images of split {result['split']} (the walk starts "
             f"from {result['start']})"]
    aff = result["affinity_labels"]
    if aff:
        lines.append(f"affinity labels: confident foreground {aff['foreground_share']}% of pixels, "
                     f"{aff['foreground_precision']}% right; background {aff['background_share']}%, "
                     f"{aff['background_precision']}% right; unsure {aff['unsure_share']}%")
    net = result["affinity_net"]
    by_distance = ", ".join(f"{d}: {v}" for d, v in net["auc_by_distance"].items())
    lines.append(f"AffinityNet: same- vs different-class pairs AUC {net['auc']} "
                 f"(by distance in cells {by_distance})")
    if result["chain"]:
        rows = [(name, link["miou"], link["inside_objects"], link["outside_objects"])
                for name, link in result["chain"].items()]
        lines.append(format_table(["link", "mIoU", "object px right %", "background px as object %"],
                                  rows))
    return "\n".join(lines)
