"""predict: a trained segmentation (train-seg) or single-stage model -> palette PNGs.

Per image: the softmax of ``model.segment`` at every scale and on the mirror image,
upsampled to the image size and averaged; the dense CRF on that distribution (default, as
in DeepLab; ``--no-crf`` skips it); the arg-max written as a VOC palette PNG at image size.
Works on a dataset split (``--data --split``) or on a plain folder of images
(``--images``); resumable and shardable like every per-image stage.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsss_cli.data.dataset import ImageFolder, VocDataset
from wsss_cli.errors import WsssError
from wsss_cli.inference import LabelTask, class_probs, prepare_inference, write_labels
from wsss_cli.models.kinds import SEGMENTATION, SINGLE_STAGE, load_model
from wsss_cli.options import option
from wsss_cli.stages.common import (
    NetworkPassConfig,
    crf_iters_option,
    data_option,
    jobs_option,
    per_image_run,
    split_option,
)
from wsss_cli.workdir import Layout, file_digest

STAGE = "predict"
SEGMENTERS = (SEGMENTATION, SINGLE_STAGE)  # the checkpoint kinds predict can run


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
    out: str | None = option(None, "Output folder under WORKDIR.", metavar="NAME",
                             default_text="pred/<split or images folder name>")
    jobs: int = jobs_option()


def default_model(layout: Layout) -> Path:
    """``seg/model.pt`` when train-seg ran, else ``single_stage/model.pt``."""
    candidates = [layout.model(kind) for kind in SEGMENTERS]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise WsssError(f"--model not given and neither {candidates[0]} nor {candidates[1]} exists "
                    "(run train-seg first)")


def _source(cfg: PredictConfig) -> tuple[VocDataset | ImageFolder, list[str], str]:
    """(image reader, ids, default output name) of ``--images`` or ``--data --split``."""
    if cfg.images is not None:
        folder = ImageFolder(cfg.images)
        return folder, folder.ids(), Path(cfg.images).resolve().name
    if cfg.data is None:
        raise WsssError("give --data (with --split) or --images")
    data = VocDataset(cfg.data)
    return data, data.ids(cfg.split), cfg.split


def run(cfg: PredictConfig) -> Path:
    """Write ``WORKDIR/<out>/<id>.png`` for every image; returns the folder."""
    layout = Layout(cfg.workdir)
    images, ids, name = _source(cfg)
    model_path = Path(cfg.model) if cfg.model else default_model(layout)
    num_classes = images.num_classes if isinstance(images, VocDataset) else None
    model, _ = load_model(model_path, SEGMENTERS, num_classes)
    predictions = layout.labels(cfg.out) if cfg.out else layout.predictions(name)
    with per_image_run(f"{STAGE}:{predictions.name}", cfg, ids, predictions,
                       {"model_digest": file_digest(model_path)}) as job:
        job.logger.info("model %s", model_path)
        device, amp, loader = prepare_inference(model, cfg.runtime, cfg.amp, images, job.todo,
                                                cfg.workers)

        def predicted() -> Iterator[LabelTask]:
            for image_id, image in loader:
                image = image.numpy()
                probs = class_probs(model, image, cfg.scales, cfg.flip, device, amp)
                yield predictions.path(image_id), image, probs, np.arange(1, len(probs))

        write_labels(predicted(), cfg.crf, cfg.crf_iters, cfg.jobs, job.progress)
    return predictions.folder
