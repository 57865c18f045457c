"""Per-image inference shared by the stages: multi-scale + flip maps (dump-cams, predict)
and scores -> (CRF) -> label PNGs on a pool of processes (random-walk, predict, eval-cams)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from joblib import Parallel, delayed
from torch import nn
from torch.utils.data import DataLoader

from wsss_cli import ops
from wsss_cli.data.augment import normalize, resize
from wsss_cli.data.io import write_palette_png
from wsss_cli.data.loaders import ImageSet
from wsss_cli.runtime import Runtime
from wsss_cli.workdir import ArtifactSet

MapFn = Callable[[torch.Tensor], torch.Tensor]


def prepare_inference(model: nn.Module, runtime: Runtime, amp: bool, images: Any, ids: list[str],
                      workers: int) -> tuple[torch.device, bool, DataLoader]:
    """Move ``model`` to the run's device, channels_last (faster convolutions there and on
    the CPU); returns the device, whether AMP applies (CUDA only) and a loader of ``(id,
    image)`` over ``ids`` of ``images`` (a dataset or folder)."""
    device = runtime.torch_device()
    model.to(device, memory_format=torch.channels_last)
    loader = DataLoader(ImageSet(images, ids), batch_size=None, num_workers=workers)
    return device, amp and device.type == "cuda", loader


@torch.no_grad()
def multiscale_sum(
    maps: MapFn, image: np.ndarray, scales: tuple[float, ...], flip: bool, device: torch.device,
    amp: bool = False,
) -> torch.Tensor:
    """Sum over scales (and mirror images) of ``maps`` upsampled to the image size.

    ``image``: RGB uint8 ``[H, W, 3]``. ``maps``: a normalised batch ``[B, 3, h, w]`` ->
    ``[B, C, h', w']`` (any stride). The mirror image's maps are flipped back before
    summing. Returns float32 ``[C, H, W]`` on ``device``.
    """
    h, w = image.shape[:2]
    total = None
    for scale in scales:
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        x = torch.from_numpy(normalize(resize(image, size)))[None].to(device)
        if flip:
            x = torch.cat([x, x.flip(-1)])
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = maps(x)
        out = F.interpolate(out.float(), (h, w), mode="bilinear", align_corners=False)
        out = out[0] + (out[1].flip(-1) if flip else 0)
        total = out if total is None else total + out
    return total


@dataclass(frozen=True)
class Crf:
    """A stage's dense CRF (``ops.dense_crf``): ``iters`` mean-field steps with ``backend``
    (auto, pydensecrf or torch) on ``device``."""

    iters: int = 10
    backend: str = "auto"
    device: str = "cpu"

    @classmethod
    def of(cls, cfg: Any) -> Crf:
        """From a stage config's ``crf_iters``, ``crf_backend`` and ``runtime``: auto is the
        torch backend on the GPU when the run has one, else ``ops.dense_crf``'s auto
        (pydensecrf where it is installed, torch otherwise)."""
        device = cfg.runtime.torch_device()
        if cfg.crf_backend == "pydensecrf" or (cfg.crf_backend == "auto" and device.type != "cuda"):
            return cls(cfg.crf_iters, cfg.crf_backend)
        return cls(cfg.crf_iters, "torch", str(device))

    def __call__(self, image: np.ndarray, probs: np.ndarray) -> np.ndarray:
        """The posterior ``[K, H, W]`` of ``probs`` ``[K, H, W]`` over RGB uint8 ``image``."""
        return ops.dense_crf(image, probs, iters=self.iters, backend=self.backend, device=self.device)

    def jobs(self, jobs: int) -> int:
        """How many processes may run it: ``jobs``, or this one alone on the GPU."""
        return jobs if self.device == "cpu" else 1


def scores_to_label(image: np.ndarray, scores: np.ndarray, classes: np.ndarray, crf: Crf | None,
                    crf_power: float = 1.0, keep_classes: bool = False,
                    rescue_share: float = 0.0) -> np.ndarray:
    """uint8 class map ``[H, W]`` from scores ``[1 + n, H, W]``.

    Channel 0 is background, channel ``k`` is class ``classes[k - 1]``; with ``crf`` the
    scores raised to ``crf_power`` are normalised to a distribution and refined by that
    dense CRF first. ``keep_classes``: a class the CRF erases from the image keeps its
    pixels of the map without the CRF. ``rescue_share`` (> 0): a class the map still
    lacks takes the pixels where its score reaches that share of its maximum.
    """
    channel_class = np.concatenate([[0], classes]).astype(np.uint8)
    label = channel_class[scores.argmax(axis=0)]
    if crf is not None and len(classes):
        powered = np.power(np.maximum(scores, 0), crf_power) if crf_power != 1 else scores
        probs = powered / np.maximum(powered.sum(axis=0, keepdims=True), 1e-8)
        plain, label = label, channel_class[crf(image, probs.astype(np.float32)).argmax(axis=0)]
        erased = [c for c in classes if not (label == c).any()] if keep_classes else []
        if erased:
            label = np.where(np.isin(plain, erased), plain, label)
    for row, c in enumerate(classes if rescue_share > 0 else [], start=1):
        if not (label == c).any() and scores[row].max() > 0:
            label = np.where(scores[row] >= rescue_share * scores[row].max(), c, label)
    return label


LabelTask = tuple[Path, np.ndarray, np.ndarray, np.ndarray]  # (png, image, scores, classes)
# also made in the worker from (png path, image, label), before the PNG: e.g. an overlay
LabelExtra = Callable[[Path, np.ndarray, np.ndarray], None]


def _write_label(path: Path, image: np.ndarray, scores: np.ndarray, classes: np.ndarray,
                 crf: Crf | None, crf_power: float, extra: LabelExtra | None,
                 before_crf: ArtifactSet | None, keep_classes: bool, rescue_share: float) -> None:
    if before_crf is not None:
        write_palette_png(before_crf.path(path.stem), scores_to_label(image, scores, classes, None))
    label = scores_to_label(image, scores, classes, crf, crf_power, keep_classes, rescue_share)
    if extra is not None:  # first: the PNG marks the image done, for resuming
        extra(path, image, label)
    write_palette_png(path, label)


def write_labels(tasks: Iterable[LabelTask], crf: Crf | None, jobs: int,
                 progress: Callable[[Iterable], Iterable], extra: LabelExtra | None = None,
                 crf_power: float = 1.0, before_crf: ArtifactSet | None = None,
                 keep_classes: bool = False, rescue_share: float = 0.0) -> None:
    """Write one palette PNG per task; CRF (None: none) and PNG encoding run on ``jobs``
    processes (one with the CRF on the GPU) while the caller's generator computes the next
    scores (on the GPU or torch's threads).

    ``extra`` (picklable: a module-level function or a dataclass instance) is called in
    the same process with the PNG's path, the image and its label before the PNG is
    written, so that an image whose PNG exists has its extra output too. ``before_crf``:
    a set that also gets the labels without the CRF, first too. ``keep_classes``: as
    ``scores_to_label``'s.
    """
    threads = torch.get_num_threads()
    jobs = crf.jobs(jobs) if crf is not None else jobs
    if jobs > 1:
        # the CRF processes take cores; torch threads spinning beside them slow down badly
        torch.set_num_threads(max(1, (os.cpu_count() or 1) - jobs))
    try:
        with Parallel(n_jobs=jobs, return_as="generator_unordered") as pool:
            work = (delayed(_write_label)(*task, crf, crf_power, extra, before_crf,
                                                    keep_classes, rescue_share) for task in tasks)
            for _ in progress(pool(work)):
                pass
    finally:  # the setting is the process's: later stages of `wsss demo` train on all cores
        torch.set_num_threads(threads)


def class_probs(model: nn.Module, image: np.ndarray, scales: tuple[float, ...], flip: bool,
                device: torch.device, amp: bool = False) -> np.ndarray:
    """Class distribution ``[K, H, W]`` float32 of an RGB uint8 image ``[H, W, 3]``: the
    softmax of ``model.segment`` averaged over scales and flips."""
    total = multiscale_sum(lambda x: model.segment(x).float().softmax(dim=1), image, scales, flip,
                           device, amp)
    return (total / (len(scales) * (2 if flip else 1))).cpu().numpy()


def with_background(cams: np.ndarray, alpha: float) -> np.ndarray:
    """``[n, H, W]`` CAMs -> ``[1 + n, H, W]`` with ``(1 - max CAM)^alpha`` as channel 0 (PSA)."""
    peak = cams.max(axis=0) if len(cams) else np.zeros(cams.shape[1:], np.float32)
    background = np.power(1 - peak, alpha)[None]
    return np.concatenate([background, cams]).astype(np.float32)
