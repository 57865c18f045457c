"""IAL's confident-region mining, three per-image stages of a round.

1. ``ial-superpixels``: SLIC superpixels of every image, once for all rounds.
2. ``ial-candidates``: a superpixel whose pixels are at least ``region_ratio`` one class in
   the unary network's output is a sample of that class (``ops.superpixel_regions``); its
   features are the classifier's last feature map mask-pooled over it.
3. ``ial-regions``: a region classifier (Fast R-CNN style: pooled features -> MLP) learns
   the samples' classes; a sample it gives another class is dropped, the others paint the
   confident-region map (class, or 255 = unknown) that supervises the pairwise network.
   The classifier is cross-fitted: the images at even places of the split are scored by
   the classifier trained on the odd ones and the other way round, so no sample is judged
   by a classifier that saw it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from skimage.segmentation import slic

from wsss_cli import ops
from wsss_cli.data.augment import normalize
from wsss_cli.data.dataset import LabelledDataset, open_dataset
from wsss_cli.data.io import read_id_png, write_id_png, write_palette_png
from wsss_cli.errors import WsssError
from wsss_cli.inference import class_probs, prepare_inference
from wsss_cli.models.kinds import CLASSIFIER, SEGMENTATION, load_model
from wsss_cli.models.pairwise import RegionClassifier
from wsss_cli.options import default_of, option
from wsss_cli.runtime import Runtime
from wsss_cli.stages.common import NetworkPassConfig, PerImageConfig, jobs_option, per_image_run
from wsss_cli.workdir import ArtifactSet, IalRound, Layout, Workdir, atomic_path, file_digest

SLIC_COMPACTNESS, SLIC_SIGMA = 10.0, 1.0  # scikit-image's default compactness, light smoothing
MAX_FEATURES = 256  # pooled features are averaged in channel groups down to this many
CLASSIFIER_EPOCHS, CLASSIFIER_BATCH, CLASSIFIER_LR = 30, 256, 1e-3
MAX_TRAINING_SAMPLES = 200_000


def superpixel_map(image: np.ndarray, area: int) -> np.ndarray:
    """SLIC superpixels of an RGB uint8 image ``[H, W, 3]`` about ``area`` pixels each ->
    ids uint16 ``[H, W]`` (0-based)."""
    h, w = image.shape[:2]
    segments = min(65535, max(1, h * w // area))
    ids = slic(image, n_segments=segments, compactness=SLIC_COMPACTNESS, sigma=SLIC_SIGMA,
               start_label=0, channel_axis=-1)
    return ids.astype(np.uint16)


def pool_features(features: np.ndarray, superpixels: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Mask pooling: features ``[D, h, w]`` (any stride) averaged over each superpixel of
    ``ids`` ``[R]`` in the map ``[H, W]``, each feature cell weighted by its share of the
    superpixel -> float32 ``[R, min(D, MAX_FEATURES)]``."""
    d, h, w = features.shape
    big_h, big_w = superpixels.shape
    cell = ((np.arange(big_h) * h // big_h)[:, None] * w + (np.arange(big_w) * w // big_w)[None])
    count = int(superpixels.max()) + 1
    weights = np.bincount((superpixels.astype(np.int64) * (h * w) + cell).ravel(),
                          minlength=count * h * w).reshape(count, h * w)[ids].astype(np.float32)
    pooled = weights @ features.reshape(d, h * w).T / np.maximum(weights.sum(1, keepdims=True), 1)
    groups = -(-d // MAX_FEATURES)
    if groups > 1:
        pooled = pooled[:, : d // groups * groups].reshape(len(ids), -1, groups).mean(-1)
    return pooled.astype(np.float32)


def present_distribution(probs: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """``probs`` ``[..., K, h, w]`` restricted to the background and the image's classes
    (1-based) and renormalised: the unary output IAL refines."""
    keep = torch.zeros(probs.shape[-3], dtype=probs.dtype, device=probs.device)
    keep[[0, *classes]] = 1
    return restricted(probs, keep)


def restricted(probs: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``probs`` ``[..., K, h, w]`` times the multi-hot ``keep`` ``[..., K]``, renormalised."""
    probs = probs * keep[..., None, None]
    return probs / probs.sum(-3, keepdim=True).clamp_min(1e-8)


def unary_distribution(unary: torch.nn.Module, image: np.ndarray, classes: list[int],
                       device: torch.device, amp: bool) -> torch.Tensor:
    """The unary network's distribution ``a_u`` ``[K, H, W]`` (CPU) of an RGB uint8 image
    ``[H, W, 3]`` (single scale + flip), restricted to the background and ``classes``."""
    return present_distribution(torch.from_numpy(class_probs(unary, image, (1.0,), True, device, amp)),
                                classes)


# ------------------------------------------------------------------ 1. superpixels


@dataclass(frozen=True, kw_only=True)
class SuperpixelsConfig(PerImageConfig):
    superpixel_area: int = option(64, "Mean superpixel area in pixels (SLIC).", min=4)
    jobs: int = jobs_option("SLIC")


def _superpixels_of(data: LabelledDataset, out: ArtifactSet, image_id: str, area: int) -> None:
    write_id_png(out.path(image_id), superpixel_map(data.read_image(image_id), area))


def make_superpixels(cfg: SuperpixelsConfig) -> ArtifactSet:
    """``WORKDIR/ial/superpixels/<id>.png`` for every image of the split."""
    data = open_dataset(cfg.data)
    out = Layout(cfg.workdir).superpixels()
    with per_image_run("ial-superpixels", cfg, data, data.ids(cfg.split), out) as job:
        job.run_each(partial(_superpixels_of, data, out, area=cfg.superpixel_area), cfg.jobs)
    return out


# ------------------------------------------------------------------ 2. candidates


@dataclass(frozen=True, kw_only=True)
class CandidatesConfig(NetworkPassConfig):
    round: int = option(1, "IAL round.", min=1)
    region_ratio: float = option(default_of(ops.superpixel_regions, "ratio"),
                                 "Share of a superpixel's pixels that must be one class in the "
                                 "unary output for it to be a sample of that class.",
                                 min=0.5, min_open=True, max=1.0)


def _candidates(unary: torch.nn.Module, classifier: torch.nn.Module, image: np.ndarray,
                classes: list[int], superpixels: np.ndarray, ratio: float, device: torch.device,
                amp: bool) -> dict[str, np.ndarray]:
    probs = unary_distribution(unary, image, classes, device, amp)
    labels = ops.superpixel_regions(probs.numpy(), superpixels, ratio)
    ids = np.flatnonzero(labels >= 0)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        features = classifier.features(torch.from_numpy(normalize(image))[None].to(device))
    pooled = pool_features(features[0].float().cpu().numpy(), superpixels, ids)
    return {"ids": ids.astype(np.int64), "labels": labels[ids], "features": pooled.astype(np.float16)}


def mine_candidates(cfg: CandidatesConfig) -> ArtifactSet:
    """``WORKDIR/ial/round<k>/candidates/<id>.npz``: the superpixels the round's unary
    network labels with one class (``ids``, ``labels`` = class index) and their pooled
    classifier features."""
    data = open_dataset(cfg.data)
    layout, this = Layout(cfg.workdir), IalRound(cfg.round)
    unary_path, cls_path = layout.root / this.unary / "model.pt", layout.model(CLASSIFIER)
    unary, _ = load_model(unary_path, (SEGMENTATION,), data.num_classes)
    classifier, _ = load_model(cls_path, (CLASSIFIER,), data.num_classes)
    superpixels, out = layout.superpixels(), layout.arrays(this.candidates)
    inputs = {"unary_digest": file_digest(unary_path), "cls_digest": file_digest(cls_path),
              **Workdir(cfg.workdir).producer_hashes("ial-superpixels")}
    with per_image_run(f"ial-candidates:{out.name}", cfg, data, data.ids(cfg.split), out,
                       inputs) as job:
        device, amp, loader = prepare_inference(unary, cfg.runtime, cfg.amp, data, job.todo,
                                                cfg.workers)
        classifier.to(device)
        for image_id, image in job.progress(loader):
            found = _candidates(unary, classifier, image.numpy(), data.labels(image_id),
                                read_id_png(superpixels.path(image_id)), cfg.region_ratio, device, amp)
            with atomic_path(out.path(image_id)) as tmp, open(tmp, "wb") as f:
                np.savez_compressed(f, **found)
    return out


# ------------------------------------------------------------------ 3. confident regions


@dataclass(frozen=True, kw_only=True)
class RegionsConfig(PerImageConfig):
    round: int = option(1, "IAL round.", min=1)


def _read_candidates(path: Path) -> dict[str, np.ndarray]:
    try:
        with open(path, "rb") as f, np.load(f) as z:
            return {k: z[k] for k in ("ids", "labels", "features")}
    except (OSError, ValueError, KeyError) as e:
        raise WsssError(f"{path}: not a readable candidate file ({e}); remove it to remake it") from None


def train_region_classifier(features: np.ndarray, labels: np.ndarray, num_classes: int,
                            seed: int) -> tuple[RegionClassifier, np.ndarray, np.ndarray]:
    """A region classifier trained (CPU, seeded) on ``features`` ``[N, D]`` with classes
    ``labels`` ``[N]``; returns it with the standardisation (mean, std ``[D]``) it expects."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    if len(labels) > MAX_TRAINING_SAMPLES:
        keep = torch.randperm(len(labels), generator=generator)[:MAX_TRAINING_SAMPLES].numpy()
        features, labels = features[keep], labels[keep]
    mean, std = features.mean(0), features.std(0) + 1e-6
    x = torch.from_numpy((features - mean) / std).float()
    y = torch.from_numpy(labels).long()
    model = RegionClassifier(x.shape[1], num_classes)
    optimizer = torch.optim.AdamW(model.parameters(), lr=CLASSIFIER_LR, weight_decay=1e-2)
    model.train()
    for _ in range(CLASSIFIER_EPOCHS):
        for batch in torch.randperm(len(y), generator=generator).split(CLASSIFIER_BATCH):
            optimizer.zero_grad()
            F.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    return model.eval(), mean, std


def agreeing(classifier: tuple[RegionClassifier, np.ndarray, np.ndarray], found: dict[str, np.ndarray],
             classes: list[int]) -> np.ndarray:
    """bool ``[R]``: the candidates the classifier, restricted to the background and the
    image's ``classes``, puts in the class they were mined with."""
    model, mean, std = classifier
    if not len(found["labels"]):
        return np.zeros(0, bool)
    with torch.no_grad():
        logits = model(torch.from_numpy((found["features"].astype(np.float32) - mean) / std))
    allowed = torch.full((logits.shape[1],), float("-inf"))
    allowed[[0, *classes]] = 0
    return (logits + allowed).argmax(1).numpy() == found["labels"]


def region_map(superpixels: np.ndarray, ids: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W]``: superpixel ``ids[r]`` painted ``labels[r]``, 255 elsewhere."""
    paint = np.full(int(superpixels.max()) + 1, 255, np.uint8)
    paint[ids] = labels
    return paint[superpixels]


def mine_regions(cfg: RegionsConfig) -> ArtifactSet:
    """``WORKDIR/ial/round<k>/regions/<id>.png``: the candidates the cross-fitted region
    classifier agrees with (class index), 255 elsewhere."""
    data = open_dataset(cfg.data)
    layout, this = Layout(cfg.workdir), IalRound(cfg.round)
    candidates, superpixels, out = (layout.arrays(this.candidates), layout.superpixels(),
                                    layout.labels(this.regions))
    ids = data.ids(cfg.split)
    inputs = Workdir(cfg.workdir).producer_hashes(f"ial-candidates:{candidates.name}")
    with per_image_run(f"ial-regions:{out.name}", cfg, data, ids, out, inputs) as job:
        if not job.todo:
            return out
        found = {i: _read_candidates(candidates.path(i)) for i in cfg.runtime.progress(ids, "read")}
        classifiers = [_fold_classifier(found, ids, fold, data.num_classes, cfg.runtime)
                       for fold in (0, 1)]
        place = {image_id: n for n, image_id in enumerate(ids)}
        for image_id in job.progress(job.todo):
            mined = found[image_id]
            keep = agreeing(classifiers[place[image_id] % 2], mined, data.labels(image_id))
            label = region_map(read_id_png(superpixels.path(image_id)), mined["ids"][keep],
                               mined["labels"][keep])
            write_palette_png(out.path(image_id), label)
    return out


def _fold_classifier(found: dict[str, dict[str, np.ndarray]], ids: list[str], fold: int,
                     num_classes: int, runtime: Runtime) -> tuple[RegionClassifier, np.ndarray, np.ndarray]:
    """The classifier that scores the images at places ``fold`` mod 2: trained on the others."""
    train = [found[i] for n, i in enumerate(ids) if n % 2 != fold] or list(found.values())
    features = np.concatenate([f["features"] for f in train]).astype(np.float32)
    labels = np.concatenate([f["labels"] for f in train])
    if not len(labels):
        raise WsssError("IAL found no confident superpixel in any image: the unary network "
                        "labels no superpixel with one class (lower --region-ratio?)")
    return train_region_classifier(features, labels, num_classes, runtime.seed + fold)
