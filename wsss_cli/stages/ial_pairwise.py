"""IAL's pairwise network: trained on a round's confident regions, then its E-step.

``train-pairwise``: the guidance network predicts the gates of a spatial propagation
network (``ops.spn_propagate``) from the image; the gates propagate the round's unary
distribution ``a_u`` (frozen unary network, restricted to the image's classes) into
``a_p = G a_u``. Loss: cross-entropy of the normalised ``a_p`` on the confident regions
(255 = unknown, ignored) + ``smoothness_weight`` x the mean squared distance of the
normalised gates to the superpixel targets (``ops.spn_gate_targets``: a pixel's gates
share their weight among the neighbours in its superpixel, none across).

``ial-refine``: ``a_p`` of every image, restricted to its classes, each class kept only
where its CAM reaches ``cam_gate`` of its maximum (0: everywhere), (CRF,) argmax: the
round's pseudo-labels; where they agree with the round's confident regions, and farther than
``supervision_band`` pixels from a boundary between two labels, they are the next round's
supervision (255 elsewhere). The image labels say which objects are there, so
none is dropped: a labelled class the CRF erases keeps its pixels from before the CRF
(``keep_classes``), and a class of the labels that no confident region keeps is supervised
on its label pixels (``supervise_lost``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wsss_cli import ops
from wsss_cli.data.augment import AugmentConfig, normalize
from wsss_cli.data.dataset import open_dataset
from wsss_cli.data.io import read_mask, write_palette_png
from wsss_cli.data.loaders import RegionSet
from wsss_cli.inference import Crf, LabelTask, prepare_inference, write_labels
from wsss_cli.models.kinds import PAIRWISE, SEGMENTATION, load_model
from wsss_cli.models.pairwise import PairwiseNet
from wsss_cli.options import option
from wsss_cli.stages.common import (
    NetworkPassConfig,
    TrainingConfig,
    backbone_option,
    crf_backend_option,
    crf_iters_option,
    crf_power_option,
    fill_from_preset,
    jobs_option,
    per_image_run,
    set_option,
    training_run,
)
from wsss_cli.stages.ial_regions import restricted, unary_distribution
from wsss_cli.training import fit, param_groups
from wsss_cli.workdir import (
    ArtifactSet,
    IalRound,
    Layout,
    Workdir,
    entry_name,
    file_digest,
    read_cams,
)

STAGE = "train-pairwise"
# SPN's reference trains the gate layers at 1e-4 and the guidance network at 0.1x of it;
# tiny starts from the classifier's backbone with AdamW (docs/results.md#ial)
_SPN = dict(pretrained="imagenet", optimizer="sgd", epochs=10, batch_size=10, lr=1e-5,
            weight_decay=5e-4, crop_size=321)
PRESETS: dict[str, dict] = {
    "psa": _SPN,
    "irn": _SPN,
    "tiny": dict(pretrained="cls", optimizer="adamw", epochs=10, batch_size=16, lr=5e-4,
                 weight_decay=5e-4, crop_size=128, freeze_bn=False),
}


@dataclass(frozen=True, kw_only=True)
class TrainPairwiseConfig(TrainingConfig):
    PRESETS: ClassVar[dict[str, dict]] = PRESETS
    backbone: str = backbone_option()
    round: int = option(1, "IAL round.", min=1)
    smoothness_weight: float = option(1.0, "Weight of the superpixel smoothness term on the gates.",
                                      min=0)
    class_weights: tuple[float, ...] | None = option(
        None, "Cross-entropy weight of each class on the regions, background first.", min=0,
        metavar="W0 W1 ...", hashed="unless-default", default_text="1 for every class")


def pairwise_losses(gates: torch.Tensor, unary: torch.Tensor, regions: torch.Tensor,
                    superpixels: torch.Tensor, weight: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(region cross-entropy, gate smoothness) of raw gates ``[B, 4, 3, K, h, w]``, the unary
    distribution ``[B, K, h', w']``, regions ``[B, H, W]`` (255 = unknown) and superpixel ids
    ``[B, H, W]``."""
    unary = F.interpolate(unary, gates.shape[-2:], mode="bilinear", align_corners=False)
    refined = F.interpolate(ops.spn_propagate(unary, gates), regions.shape[-2:], mode="bilinear",
                            align_corners=False).clamp_min(1e-6)
    log_p = (refined / refined.sum(1, keepdim=True)).log()
    region_loss = F.nll_loss(log_p, regions, weight, ignore_index=255) if (regions != 255).any() \
        else log_p.sum() * 0
    grid = F.interpolate(superpixels[:, None].float(), gates.shape[-2:], mode="nearest")[:, 0]
    targets = ops.spn_gate_targets(grid.long())[:, :, :, None]
    return region_loss, (ops.normalize_gates(gates) - targets).pow(2).mean()


def train_pairwise(cfg: TrainPairwiseConfig) -> Path:
    """Train round ``cfg.round``'s pairwise network -> ``WORKDIR/ial/round<k>/pairwise/model.pt``."""
    layout, this = Layout(cfg.workdir), IalRound(cfg.round)
    cfg = replace(fill_from_preset(cfg, PRESETS), out=this.pairwise)
    data = open_dataset(cfg.data)
    ids = data.ids(cfg.split)
    unary_path = layout.root / this.unary / "model.pt"
    regions = layout.labels(this.regions)
    inputs = {"unary_digest": file_digest(unary_path),
              **Workdir(cfg.workdir).producer_hashes(f"ial-regions:{regions.name}")}
    with training_run(STAGE, cfg, PAIRWISE, data, ids, inputs) as job:
        if job.finished_before:
            return job.model
        cfg.runtime.seed_everything()
        unary, _ = load_model(unary_path, (SEGMENTATION,), data.num_classes)
        unary.to(cfg.runtime.torch_device()).requires_grad_(False)
        model = PairwiseNet(cfg.initial_backbone(), data.num_classes)
        aug = AugmentConfig(crop=cfg.crop_size, resize_long=cfg.resize_long, scale=(0.5, 1.5),
                            color_jitter=0.0)
        dataset = RegionSet(data, ids, regions, layout.superpixels(), aug, cfg.runtime.seed)

        def step(net: nn.Module, batch: list[torch.Tensor], ctx: Any) -> torch.Tensor:
            images, region_maps, superpixels, present = batch
            with torch.no_grad():
                probs = restricted(unary(images).float().softmax(1), present)
            weight = None if cfg.class_weights is None else probs.new_tensor(cfg.class_weights)
            region_loss, smooth_loss = pairwise_losses(net(images).float(), probs, region_maps,
                                                       superpixels, weight)
            return region_loss + cfg.smoothness_weight * smooth_loss

        meta = {"kind": PAIRWISE, "backbone": cfg.backbone, "num_classes": data.num_classes}
        loop = cfg.loop()
        final = fit(model, param_groups(model.backbone, model.head, cfg.lr, loop.head_lr_mult),
                    dataset, step, loop, job.model_dir, cfg.runtime, meta, job.logger)
        job.record.update(images=len(ids))
    return final


# ------------------------------------------------------------------ the E-step


@dataclass(frozen=True, kw_only=True)
class RefineConfig(NetworkPassConfig):
    round: int = option(1, "IAL round.", min=1)
    crf: bool = option(True, "Dense CRF on the refined distribution.")
    crf_iters: int = crf_iters_option()
    crf_backend: str = crf_backend_option()
    crf_power: float = crf_power_option()
    keep_classes: bool = option(True, "A labelled class the CRF erases from an image keeps its "
                                      "pixels from before the CRF.")
    supervise_lost: bool = option(True, "A class of an image's labels that no confident region "
                                        "keeps is supervised on its label pixels in the next round.")
    rescue_lost: float = option(0.0, "A labelled class the labels still lack takes the pixels "
                                     "where its refined score reaches this share of its maximum "
                                     "in the image; 0 = off.", min=0, max=1, hashed="unless-default")
    cam_gate: float = option(0.0, "A class may label only the pixels where its CAM reaches this "
                                  "share of its maximum; 0 = everywhere.", min=0, max=1)
    supervision_band: int = option(0, "Leave unknown in the next round's supervision the pixels "
                                      "within PX pixels (a square) of a boundary between two "
                                      "labels; 0 = none.", min=0, metavar="PX",
                                   hashed="unless-default")
    cams: str = set_option(Layout.CAMS, "CAM set the CAM gate reads")
    jobs: int = jobs_option()


@torch.no_grad()
def refined_scores(unary: nn.Module, pairwise: PairwiseNet, image: np.ndarray, classes: list[int],
                   device: torch.device, amp: bool) -> np.ndarray:
    """``a_p = G a_u`` of an RGB uint8 image ``[H, W, 3]`` over the background and its
    ``classes`` -> ``[1 + n, H, W]`` float32 (a distribution per pixel)."""
    probs = unary_distribution(unary, image, classes, device, amp).to(device)
    x = torch.from_numpy(normalize(image))[None].to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        gates = pairwise(x)
    small = F.interpolate(probs[None], gates.shape[-2:], mode="bilinear", align_corners=False)
    refined = F.interpolate(ops.spn_propagate(small, gates.float()), image.shape[:2], mode="bilinear",
                            align_corners=False)[0]
    refined = refined[[0, *classes]].clamp_min(0)
    return (refined / refined.sum(0, keepdim=True).clamp_min(1e-8)).cpu().numpy()


def gated_by_cams(scores: np.ndarray, classes: list[int], cam_classes: np.ndarray, cams: np.ndarray,
                  share: float) -> np.ndarray:
    """``scores [1 + n, H, W]`` (background, then ``classes``) with each class's score moved
    to the background where its CAM (``cams [m, H, W]`` of ``cam_classes``) is below
    ``share`` of its maximum; every pixel keeps its sum."""
    out = scores.copy()
    for row, c in enumerate(classes, start=1):
        cam = cams[list(cam_classes).index(c)]
        gated = cam < share * cam.max()
        out[0][gated] += out[row][gated]
        out[row][gated] = 0
    return out


@dataclass(frozen=True)
class ConfidentPart:
    """Writes the part of a label map that agrees with the image's confident regions and
    lies farther than ``band`` pixels from a boundary between two labels (255 elsewhere)
    into ``out``; with ``keep_lost``, a class of the map that this part lacks keeps its
    pixels of the map. Picklable, for the CRF's worker processes."""

    regions: ArtifactSet
    out: ArtifactSet
    keep_lost: bool = False
    band: int = 0

    def __call__(self, png: Path, image: np.ndarray, label: np.ndarray) -> None:
        regions = read_mask(self.regions.path(png.stem))
        part = np.where(regions == label, label, 255).astype(np.uint8)
        part[near_boundary(label, self.band)] = 255
        if self.keep_lost:
            lost = np.setdiff1d(label[label > 0], part)
            part = np.where(np.isin(label, lost), label, part)
        write_palette_png(self.out.path(png.stem), part)


def near_boundary(label: np.ndarray, band: int) -> np.ndarray:
    """bool ``[H, W]``: the pixels of a label map ``[H, W]`` with another label within
    ``band`` pixels (a ``2 band + 1`` square around them); all False for ``band`` 0."""
    if band <= 0:
        return np.zeros(label.shape, bool)
    square = np.ones((2 * band + 1, 2 * band + 1), np.uint8)
    label = label.astype(np.uint8)
    return cv2.dilate(label, square) != cv2.erode(label, square)


def refine(cfg: RefineConfig) -> ArtifactSet:
    """``WORKDIR/ial/round<k>/labels/<id>.png``: round ``k``'s pseudo-labels, and their part
    that agrees with the round's confident regions, off the ``supervision_band`` at label
    boundaries, in ``supervision/``."""
    data = open_dataset(cfg.data)
    layout, this = Layout(cfg.workdir), IalRound(cfg.round)
    unary_path, pairwise_path = (layout.root / this.unary / "model.pt",
                                 layout.root / this.pairwise / "model.pt")
    unary, _ = load_model(unary_path, (SEGMENTATION,), data.num_classes)
    pairwise, _ = load_model(pairwise_path, (PAIRWISE,), data.num_classes)
    out = layout.labels(this.labels)
    inputs = {"unary_digest": file_digest(unary_path), "pairwise_digest": file_digest(pairwise_path),
              **Workdir(cfg.workdir).producer_hashes(f"ial-regions:{this.regions}")}
    if cfg.cam_gate > 0:
        inputs.update(Workdir(cfg.workdir).producer_hashes(entry_name("dump-cams", cfg.cams,
                                                                      Layout.CAMS)))
    supervision, cams = layout.labels(this.supervision), layout.cams(cfg.cams)
    with per_image_run(f"ial-refine:{out.name}", cfg, data, data.ids(cfg.split), out, inputs) as job:
        job.record.update(also_writes=[supervision.name])
        device, amp, loader = prepare_inference(unary, cfg.runtime, cfg.amp, data, job.todo,
                                                cfg.workers)
        pairwise.to(device)

        def scored() -> Any:
            for image_id, image in loader:
                image, classes = image.numpy(), data.labels(image_id)
                scores = refined_scores(unary, pairwise, image, classes, device, amp)
                if cfg.cam_gate > 0:
                    scores = gated_by_cams(scores, classes, *read_cams(cams.path(image_id)),
                                           cfg.cam_gate)
                task: LabelTask = (out.path(image_id), image, scores, np.array(classes))
                yield task

        write_labels(scored(), Crf.of(cfg) if cfg.crf else None, cfg.jobs, job.progress,
                     ConfidentPart(layout.labels(this.regions), supervision, cfg.supervise_lost,
                                   cfg.supervision_band),
                     cfg.crf_power, keep_classes=cfg.keep_classes, rescue_share=cfg.rescue_lost)
    return out
