"""predict: a trained segmentation (train-seg) or single-stage model -> palette PNGs.

Per image: the softmax of ``model.segment`` at every scale and on the mirror image,
upsampled to the image size and averaged; the dense CRF on that distribution (default, as
in DeepLab; ``--no-crf`` skips it); the arg-max written as a VOC palette PNG at image size.
Works on a dataset split (``--data --split``) or on a plain folder of images
(``--images``); resumable and shardable like every per-image stage.

With ``--overlay`` (on by default for ``--images``) the same worker processes also write
``overlay/<id>.jpg``: the image tinted with its predicted classes' colours, above a legend.
After the run a per-image class summary (share of pixels per class) is printed and
written to ``summary.json``, for every image of the run with a prediction.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from wsss_cli.data.dataset import ImageFolder, LabelledDataset, open_dataset
from wsss_cli.data.io import read_mask
from wsss_cli.data.overlay import OVERLAY_FOLDER, OverlayWriter, class_name
from wsss_cli.errors import WsssError
from wsss_cli.evaluation import format_table
from wsss_cli.inference import Crf, LabelTask, class_probs, prepare_inference, write_labels
from wsss_cli.models.kinds import SEGMENTATION, SINGLE_STAGE, load_model
from wsss_cli.options import option
from wsss_cli.stages.common import (
    NetworkPassConfig,
    crf_backend_option,
    crf_iters_option,
    data_option,
    in_local_shards,
    jobs_option,
    per_image_run,
    processes_option,
    split_option,
)
from wsss_cli.training import load_checkpoint
from wsss_cli.workdir import ArtifactSet, Layout, file_digest, write_bytes

STAGE = "predict"
SEGMENTERS = (SEGMENTATION, SINGLE_STAGE)  # the checkpoint kinds predict can run
SUMMARY = "summary.json"
SUMMARY_ROWS = 20  # printed; summary.json has every image


@dataclass(frozen=True, kw_only=True)
class PredictConfig(NetworkPassConfig):
    data: Path | None = data_option(None)
    split: str = split_option("val")
    images: Path | None = option(None, "A folder of images to predict instead of a dataset split.",
                                 exists=True, file_okay=False)
    model: Path | None = option(None, "Segmentation or single-stage checkpoint.", dir_okay=False,
                                default_text="WORKDIR/seg/model.pt, else WORKDIR/single_stage/model.pt")
    scales: tuple[float, ...] = option((1.0,), "Inference scales whose softmax outputs are averaged, "
                                               "e.g. 0.5,0.75,1.0,1.25.")
    flip: bool = option(True, "Add the mirrored image at every scale.")
    crf: bool = option(True, "Dense CRF on the predicted probabilities, as DeepLab's inference ends.")
    crf_iters: int = crf_iters_option()
    crf_backend: str = crf_backend_option()
    out: str | None = option(None, "Output folder under WORKDIR.", metavar="NAME",
                             default_text="pred/<split or images folder name>")
    jobs: int = jobs_option()
    processes: int = processes_option()
    overlay: bool | None = option(None, "Also write overlay/<id>.jpg: the image tinted with the predicted "
                                        "classes' colours, with a legend.",
                                  default_text="on with --images, off for a dataset split",
                                  hashed="unless-default")


def default_model(layout: Layout) -> Path:
    """``seg/model.pt`` when train-seg ran, else ``single_stage/model.pt``."""
    candidates = [layout.model(kind) for kind in SEGMENTERS]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise WsssError(f"--model not given and neither {candidates[0]} nor {candidates[1]} exists "
                    "(run train-seg first)")


def _source(cfg: PredictConfig) -> tuple[LabelledDataset | ImageFolder, list[str], str]:
    """(image reader, ids, default output name) of ``--images`` or ``--data --split``."""
    if cfg.images is not None:
        folder = ImageFolder(cfg.images)
        return folder, folder.ids(), Path(cfg.images).resolve().name
    if cfg.data is None:
        raise WsssError("give --data (with --split) or --images")
    data = open_dataset(cfg.data)
    return data, data.ids(cfg.split), cfg.split


def _class_names(images: LabelledDataset | ImageFolder, meta: dict[str, Any]) -> tuple[str, ...]:
    """The dataset's class names; for ``--images`` the checkpoint's (train-seg and
    train-single-stage save them), else ``class<i>``."""
    if isinstance(images, LabelledDataset):
        return tuple(images.classes)
    names = tuple(meta.get("classes") or ())
    return tuple(class_name(names, i) for i in range(meta.get("num_classes", len(names))))


def class_shares(label: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """Percent of the pixels of ``label`` per class present, largest first (2 decimals)."""
    counts = np.bincount(label.ravel(), minlength=len(names))
    order = sorted(np.flatnonzero(counts), key=lambda c: (-counts[c], c))
    return {class_name(names, int(c)): round(100 * float(counts[c]) / label.size, 2) for c in order}


def summarize(output: ArtifactSet, ids: Sequence[str], names: Sequence[str]) -> list[dict[str, Any]]:
    """Per image of ``ids`` that has a prediction in ``output``: its id, size and
    :func:`class_shares` (read back from the PNGs: images predicted by earlier runs or
    other shards count too)."""
    entries = []
    for image_id in ids:
        path = output.path(image_id)
        if path.exists():
            label = read_mask(path)
            entries.append({"id": image_id, "size": list(label.shape),
                            "percent": class_shares(label, names)})
    return entries


def format_summary(entries: Sequence[dict[str, Any]], rows: int = SUMMARY_ROWS) -> str:
    """The first ``rows`` images and their classes as a text table, then ``... N more``."""
    table = format_table(["image", "classes (% of pixels)"],
                         [[e["id"], ", ".join(f"{name} {share:.1f}" for name, share in e["percent"].items())]
                          for e in entries[:rows]])
    table = "\n".join(line.rstrip() for line in table.splitlines())
    if len(entries) > rows:
        table += f"\n... {len(entries) - rows} more"
    return table


def run(cfg: PredictConfig) -> Path:
    """Write ``WORKDIR/<out>/<id>.png`` for every image (and ``overlay/<id>.jpg`` with
    ``--overlay``), print the class summary and write ``summary.json``; returns the folder."""
    # the value that equals the default is stored as None, so that `--images --overlay`
    # and `--images` share one settings hash
    if cfg.overlay == _default_overlay(cfg):
        cfg = replace(cfg, overlay=None)
    _predict_images(cfg)
    # after every local shard: the summary reads back the predictions of all of them
    images, ids, name = _source(cfg)
    # a dataset names its classes; a folder of images takes the checkpoint's names
    meta = {} if isinstance(images, LabelledDataset) else load_checkpoint(_model_path(cfg)).get("meta", {})
    predictions = _output(cfg, name)
    _write_summary(predictions, ids, _class_names(images, meta), cfg.runtime.quiet)
    return predictions.folder


def _default_overlay(cfg: PredictConfig) -> bool:
    """Overlays are on by default for a folder of images, off for a dataset split."""
    return cfg.images is not None


def _model_path(cfg: PredictConfig) -> Path:
    return Path(cfg.model) if cfg.model else default_model(Layout(cfg.workdir))


def _output(cfg: PredictConfig, name: str) -> ArtifactSet:
    """The predictions' set: ``--out``, else ``pred/<name>``."""
    layout = Layout(cfg.workdir)
    return layout.labels(cfg.out) if cfg.out else layout.predictions(name)


@in_local_shards
def _predict_images(cfg: PredictConfig) -> Path:
    """The PNGs (and overlays) of every image of ``cfg``'s shard; returns their folder."""
    images, ids, name = _source(cfg)
    overlay = _default_overlay(cfg) if cfg.overlay is None else cfg.overlay
    model_path = _model_path(cfg)
    num_classes = images.num_classes if isinstance(images, LabelledDataset) else None
    model, meta = load_model(model_path, SEGMENTERS, num_classes)
    predictions = _output(cfg, name)
    with per_image_run(f"{STAGE}:{predictions.name}", cfg, images, ids, predictions,
                       {"model_digest": file_digest(model_path)}) as job:
        job.logger.info("model %s", model_path)
        if overlay:
            job.logger.info("overlays in %s", predictions.folder / OVERLAY_FOLDER)
        device, amp, loader = prepare_inference(model, cfg.runtime, cfg.amp, images, job.todo,
                                                cfg.workers)

        def predicted() -> Iterator[LabelTask]:
            for image_id, image in loader:
                image = image.numpy()
                probs = class_probs(model, image, cfg.scales, cfg.flip, device, amp)
                yield predictions.path(image_id), image, probs, np.arange(1, len(probs))

        write_labels(predicted(), Crf.of(cfg) if cfg.crf else None, cfg.jobs, job.progress,
                     OverlayWriter(_class_names(images, meta)) if overlay else None)
    return predictions.folder


def _write_summary(predictions: ArtifactSet, ids: list[str], names: Sequence[str], quiet: bool) -> None:
    """``summary.json`` of every image's classes (written when it changed), and its table."""
    entries = summarize(predictions, ids, names)
    summary = (json.dumps({"classes": list(names), "images": entries}, indent=2) + "\n").encode()
    path = predictions.folder / SUMMARY
    if not path.exists() or path.read_bytes() != summary:  # a finished run resumed writes nothing
        write_bytes(path, summary)
    if not quiet:
        print(format_summary(entries))
