"""``make-pseudo --method ial``: IAL's EM rounds (Wang, Liu, Ma, Yang, IJCV 2020).

Round 0 is PSA's affinity labels from the CAMs (``ial/round0/labels``, 255 = unsure).
Round k (M-step, then E-step): the unary network (train-seg's) learns round k-1's labels;
confident regions are mined from its output (``stages.ial_regions``); the pairwise
network learns them and refines the unary output, ``a_p = G a_u``, into round k's labels
(``stages.ial_pairwise``). Every round's outputs stay in ``ial/round<k>/``; each stage
is cached and resumable like any other, so a killed run continues where it stopped. The
last round's labels are linked into the pseudo-label set train-seg reads.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from wsss_cli import ops
from wsss_cli.data.dataset import open_dataset
from wsss_cli.data.io import read_mask
from wsss_cli.evaluation import format_table, iou_summary
from wsss_cli.models.backbones import BACKBONES
from wsss_cli.options import option, same_as
from wsss_cli.stages import dump_cams, make_aff_labels, train_seg
from wsss_cli.stages.common import PerImageConfig, fill_unset, per_image_run
from wsss_cli.stages.ial_pairwise import RefineConfig, TrainPairwiseConfig, refine, train_pairwise
from wsss_cli.stages.ial_regions import (
    CandidatesConfig,
    RegionsConfig,
    SuperpixelsConfig,
    make_superpixels,
    mine_candidates,
    mine_regions,
)
from wsss_cli.stages.train_aff import classifier_backbone
from wsss_cli.workdir import ArtifactSet, IalRound, Layout, Workdir, entry_name, link_file, write_json

METHODS = ("psa", "ial")
# per backbone family: superpixel area (px), (tiny) the unary network's epochs (unset =
# train-seg's), the E-step's CAM gate, its share for lost classes and the supervision's
# unknown band at label boundaries (docs/results.md#ial)
PRESETS: dict[str, dict[str, Any]] = {
    "psa": dict(superpixel_area=256, unary_epochs=None, cam_gate=0.0, rescue_lost=0.0,
                supervision_band=0),
    "irn": dict(superpixel_area=256, unary_epochs=None, cam_gate=0.0, rescue_lost=0.0,
                supervision_band=0),
    "tiny": dict(superpixel_area=64, unary_epochs=10, cam_gate=0.05, rescue_lost=0.7,
                 supervision_band=3),
}
# per backbone family: the round-0 seeds' make-aff-labels settings where --alpha-low is
# not given; unset = PSA's (docs/results.md#ial: the unary network learns the seeds' overreach)
SEED_PRESETS: dict[str, dict[str, Any]] = {"psa": {}, "irn": {}, "tiny": dict(alpha_low=1.0)}


IAL = "IAL: "  # the prefix of the options make-pseudo passes on to IAL's stages


@dataclass(frozen=True, kw_only=True)
class IalConfig:
    """make-pseudo's own options: the method and IAL's settings."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = PRESETS  # "per backbone" in --help
    method: str = option("psa", "psa: affinity labels -> AffinityNet -> random walk (PSA); ial: "
                                "unary net + learnt propagation over EM rounds (IAL, "
                                "docs/methods.md#ial).", choices=METHODS)
    rounds: int = option(5, "IAL: EM rounds after the CAM seeds (the paper's 5).", min=1)
    unary_epochs: int | None = option(None, "IAL: epochs of each round's unary network.", min=1,
                                      default_text=f"{PRESETS['tiny']['unary_epochs']} for tiny, "
                                                   "train-seg's otherwise")
    pairwise_epochs: int | None = option(None, "IAL: epochs of each round's pairwise network.",
                                         min=1, default_text="per backbone")
    pairwise_lr: float | None = option(None, "IAL: learning rate of the pairwise network's "
                                             "guidance backbone (its gate layers get 10x).",
                                       min=0, min_open=True, default_text="per backbone")
    smoothness_weight: float = same_as(TrainPairwiseConfig, "smoothness_weight", IAL)
    superpixel_area: int | None = same_as(SuperpixelsConfig, "superpixel_area", IAL, default=None,
                                          default_text="per backbone")
    region_ratio: float = same_as(CandidatesConfig, "region_ratio", IAL)
    crf_power: float = same_as(RefineConfig, "crf_power", IAL + "E-step. ")
    reweight_power: float = option(2.0, "IAL: weight each class in the unary network's loss by "
                                        "(its share of the last round's labels / its share of "
                                        "their confident part, the part it learns)^POWER, so "
                                        "that mining confident regions does not shrink the "
                                        "objects round after round; 0 = unweighted.", min=0,
                                   metavar="POWER")
    keep_classes: bool = same_as(RefineConfig, "keep_classes", IAL)
    supervise_lost: bool = same_as(RefineConfig, "supervise_lost", IAL)
    rescue_lost: float | None = same_as(RefineConfig, "rescue_lost", IAL + "E-step. ", default=None,
                                        default_text="per backbone")
    cam_gate: float | None = same_as(RefineConfig, "cam_gate", IAL + "E-step. ", default=None,
                                     default_text="per backbone")
    supervision_band: int | None = same_as(RefineConfig, "supervision_band", IAL, default=None,
                                           default_text="per backbone")
    reweight_pairwise: bool = option(True, "IAL: weigh the pairwise network's region loss with the "
                                            "unary network's class weights too.")


def run(ial: IalConfig, dump: dump_cams.DumpCamsConfig, seeds: make_aff_labels.MakeAffLabelsConfig,
        unary: train_seg.TrainSegConfig, final_set: str, crf: bool, jobs: int) -> Path:
    """CAMs, seeds, ``ial.rounds`` rounds, then the last round's labels as ``final_set``;
    returns its folder."""
    layout = Layout(seeds.workdir)
    dump_cams.run(dump)
    backbone = classifier_backbone(layout)
    # --unary-epochs, then the [train-seg] section's epochs, then the preset's
    ial = replace(ial, unary_epochs=ial.unary_epochs or unary.epochs)
    family = BACKBONES.get(backbone).family
    ial = fill_unset(ial, PRESETS[family])
    seeds = fill_unset(seeds, SEED_PRESETS[family])
    common = dict(data=seeds.data, workdir=seeds.workdir, split=seeds.split,
                  overwrite=seeds.overwrite, runtime=seeds.runtime)
    network = dict(common, amp=dump.amp, workers=dump.workers)
    make_aff_labels.run(replace(seeds, cams=dump.out, out=IalRound(0).supervision))
    make_superpixels(SuperpixelsConfig(**common, superpixel_area=ial.superpixel_area, jobs=jobs))
    table = [round_quality(seeds, 0)]
    for k in range(1, ial.rounds + 1):
        this = IalRound(k)
        weights = class_weights(seeds, k - 1, ial.reweight_power)
        train_seg.run(replace(unary, backbone=backbone, labels=None, pseudo=IalRound(k - 1).supervision,
                              out=this.unary, resume=True, val_split=None,
                              epochs=ial.unary_epochs, class_weights=weights))
        mine_candidates(CandidatesConfig(**network, round=k, region_ratio=ial.region_ratio))
        mine_regions(RegionsConfig(**common, round=k))
        train_pairwise(TrainPairwiseConfig(**common, backbone=backbone, round=k, workers=dump.workers,
                                           amp=dump.amp, resume=True, epochs=ial.pairwise_epochs,
                                           pretrained=unary.pretrained,
                                           lr=ial.pairwise_lr,
                                           smoothness_weight=ial.smoothness_weight,
                                           class_weights=weights if ial.reweight_pairwise else None))
        refine(RefineConfig(**network, round=k, crf=crf, crf_iters=seeds.crf_iters,
                            crf_backend=seeds.crf_backend,
                            crf_power=ial.crf_power, keep_classes=ial.keep_classes,
                            supervise_lost=ial.supervise_lost, rescue_lost=ial.rescue_lost,
                            cam_gate=ial.cam_gate, supervision_band=ial.supervision_band,
                            cams=dump.out, jobs=jobs))
        table.append(round_quality(seeds, k))
    if all(row is not None for row in table) and not seeds.runtime.quiet:
        print(format_table(["round", "labels mIoU", "regions precision", "supervision precision",
                            "supervision coverage"],
                           [[k, *row] for k, row in enumerate(table)]))
    return link_final(PerImageConfig(**common), IalRound(ial.rounds), final_set)


def class_weights(cfg: PerImageConfig, k: int, power: float = 1.0) -> tuple[float, ...] | None:
    """Per class (background first): its share of round ``k``'s labels over its share of
    round ``k``'s supervision, relative to the background's (1 for a class the supervision
    lacks), to the ``power``; None for round 0, whose seeds are both, for power 0, and for a
    supervision without background (nothing to weigh against)."""
    if k == 0 or power == 0:
        return None
    data, layout, this = open_dataset(cfg.data), Layout(cfg.workdir), IalRound(k)
    ids = data.ids(cfg.split)

    def pixels_per_class(labels: ArtifactSet) -> np.ndarray:
        counts = sum(np.bincount(read_mask(labels.path(i)).ravel(), minlength=256) for i in ids)
        return counts[: data.num_classes]

    full, sampled = (pixels_per_class(layout.labels(name)) for name in (this.labels, this.supervision))
    if sampled[0] == 0:
        return None
    ratio = np.where(sampled > 0, full / np.maximum(sampled, 1), 0.0)
    weights = np.where(sampled > 0, ratio / ratio[0], 1.0)
    return tuple(round(float(w) ** power, 3) for w in weights)


def round_quality(cfg: PerImageConfig, k: int) -> list[Any] | None:
    """With ground truth: round ``k``'s label mIoU, and the precision and coverage of its
    confident regions (what the pairwise network learns) and of the next round's
    supervision (round 0: the seeds alone), written to ``eval/ial_round<k>.json``; None
    without ground truth."""
    data = open_dataset(cfg.data)
    ids = data.ids(cfg.split)
    if not data.has_masks(ids):
        return None
    layout, this = Layout(cfg.workdir), IalRound(k)
    gt = {image_id: data.read_mask(image_id) for image_id in ids}
    result: dict[str, Any] = {"round": k, "split": cfg.split, "images": len(ids),
                              "supervision": partial_quality(layout.labels(this.supervision), gt)}
    if k > 0:
        result["regions"] = partial_quality(layout.labels(this.regions), gt)
        labels = layout.labels(this.labels)
        confusion = sum(ops.confusion_matrix(read_mask(labels.path(i)), gt[i], data.num_classes)
                        for i in ids)
        result.update(iou_summary(confusion, data.classes))
    write_json(layout.eval(this.eval_name), result)
    return [result.get("miou", "-"), result.get("regions", {}).get("precision", "-"),
            result["supervision"]["precision"], result["supervision"]["coverage"]]


def partial_quality(labels: ArtifactSet, gt: dict[str, np.ndarray]) -> dict[str, float]:
    """Precision (% of the labelled pixels that are right) and coverage (% of the pixels
    labelled) of label maps with unknown pixels (255), against ground truth."""
    right = marked = valid = 0
    for image_id, truth in gt.items():
        label = read_mask(labels.path(image_id))
        known = (label != 255) & (truth != 255)
        right += int((label[known] == truth[known]).sum())
        marked, valid = marked + int(known.sum()), valid + int((truth != 255).sum())
    return {"precision": round(100 * right / max(marked, 1), 4),
            "coverage": round(100 * marked / max(valid, 1), 4)}


def link_final(cfg: PerImageConfig, last: IalRound, name: str) -> Path:
    """The last round's labels as the set ``name`` (hard links where the file system allows);
    a set made by another stage (random-walk) is replaced only with ``--overwrite``."""
    data = open_dataset(cfg.data)
    layout = Layout(cfg.workdir)
    source, out = layout.labels(last.labels), layout.labels(name)
    workdir, entry = Workdir(cfg.workdir), entry_name("ial", name, Layout.PSEUDO)
    # links are cheap: a set this stage made from another round is simply relinked
    cfg = replace(cfg, overwrite=cfg.overwrite or workdir.producer_of(name) == entry)
    inputs = workdir.producer_hashes(f"ial-refine:{source.name}")
    with per_image_run(entry, cfg, data, data.ids(cfg.split), out, inputs) as job:
        for image_id in job.progress(job.todo):
            link_file(source.path(image_id), out.path(image_id))
    return out.folder
