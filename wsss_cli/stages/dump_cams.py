"""dump-cams: multi-scale + flip class activation maps, one ``<out>/<id>.npz`` per image.

For each scale the image is resized, passed with its mirror image, the CAMs of the
image's classes upsampled to the image size and summed over scales and flips; the sum
is normalised per class as the method says (PSA's ``infer_cls.py``: divided by its
maximum + 1e-5). How a classifier's maps are read is its CAM method's (recorded in the
checkpoint), or with ``--method`` Grad-CAM's or Grad-CAM++'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from wsss_cli.cam_methods import CAM_METHODS, CAM_READERS, CamReader, erasing
from wsss_cli.cam_methods.seam import MAPS
from wsss_cli.data.dataset import open_dataset
from wsss_cli.inference import multiscale_sum, prepare_inference
from wsss_cli.models.kinds import CLASSIFIER, load_model
from wsss_cli.options import option
from wsss_cli.stages.common import (
    NetworkPassConfig,
    fill_unset,
    in_local_shards,
    method_defaults,
    per_image_run,
    processes_option,
    set_option,
)
from wsss_cli.workdir import Layout, entry_name, file_digest, write_cams

STAGE = "dump-cams"


@dataclass(frozen=True, kw_only=True)
class DumpCamsConfig(NetworkPassConfig):
    cls_model: Path | None = option(None, "Classifier checkpoint.", default_text="WORKDIR/cls/model.pt",
                                    dir_okay=False)
    scales: tuple[float, ...] = option((1.0, 0.5, 1.5, 2.0), "Inference scales (each also flipped).")
    flip: bool = option(True, "Add the mirrored image at every scale.")
    method: str | None = option(None, "Read the maps another way: gradcam or gradcam++ (any "
                                      "classifier; docs/methods.md#dump-cams).",
                                hashed="unless-default", metavar="NAME",
                                default_text="the classifier's own CAM method")
    seam_maps: str | None = option(None, "SEAM classifiers: read the PCM's refined maps (SEAM's "
                                         "inference) or the CAM head's.", choices=MAPS,
                                   hashed="unless-default", default_text="refined; cam for tiny")
    erase_reach: int | None = option(None, "Erasing classifiers: a later step's map counts only "
                                           "within this many map positions of the regions the "
                                           "steps before it erased; -1: everywhere (AE-PSL's "
                                           "max).", min=-1, hashed="unless-default",
                                     default_text=f"{erasing.TINY_REACH} for tiny, -1 otherwise")
    out: str = set_option(Layout.CAMS, "CAM set to write")
    processes: int = processes_option()


def multiscale_cams(
    model: nn.Module, method: CamReader, image: np.ndarray, classes: list[int],
    scales: tuple[float, ...], flip: bool, device: torch.device, amp: bool = False,
) -> np.ndarray:
    """CAMs ``[len(classes), H, W]`` float32 of an RGB uint8 image ``[H, W, 3]``, normalised
    as the method does.

    ``classes`` are 1-based foreground indices (the CAM channel is ``c - 1``).
    """
    if not classes:
        return np.zeros((0, *image.shape[:2]), np.float32)
    channels = torch.tensor([c - 1 for c in classes], dtype=torch.long, device=device)
    total = multiscale_sum(lambda x: method.cams(model, x)[:, channels], image, scales, flip,
                           device, amp)
    return method.normalize(total).cpu().numpy()


@in_local_shards
def run(cfg: DumpCamsConfig) -> Path:
    """Write ``WORKDIR/<out>/<id>.npz`` for every image of the split; returns the folder."""
    data = open_dataset(cfg.data)
    layout = Layout(cfg.workdir)
    model_path = Path(cfg.cls_model or layout.model(CLASSIFIER))
    model, meta = load_model(model_path, (CLASSIFIER,), data.num_classes)
    method_name = cfg.method or meta.get("method", "cam")
    cfg = fill_unset(cfg, method_defaults(method_name, meta["backbone"], STAGE))
    method = (CAM_READERS if cfg.method else CAM_METHODS).get(method_name).configured(cfg)
    cams = layout.cams(cfg.out)
    name = entry_name(STAGE, cfg.out, Layout.CAMS)
    with per_image_run(name, cfg, data, data.ids(cfg.split), cams,
                       {"model_digest": file_digest(model_path)}) as job:
        job.record.update(cam_method=method_name, backbone=meta["backbone"])  # for later presets
        device, amp, loader = prepare_inference(model, cfg.runtime, cfg.amp, data, job.todo,
                                                cfg.workers)
        for image_id, image in job.progress(loader):
            classes = data.labels(image_id)
            maps = multiscale_cams(model, method, image.numpy(), classes, cfg.scales, cfg.flip,
                                   device, amp)
            write_cams(cams.path(image_id), np.array(classes), maps)
    return cams.folder
