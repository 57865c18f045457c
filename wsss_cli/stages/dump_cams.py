"""dump-cams: multi-scale + flip class activation maps, one ``cams/<id>.npz`` per image.

For each scale the image is resized, passed with its mirror image, the CAMs of the
image's classes upsampled to the image size and summed over scales and flips; the sum
is divided by its per-class maximum (+1e-5), as PSA's ``infer_cls.py`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from wsss_cli.data.dataset import VocDataset
from wsss_cli.inference import multiscale_sum, prepare_inference
from wsss_cli.models.classifier import CamNet
from wsss_cli.runtime import Runtime
from wsss_cli.stages.common import finish_per_image, pending_ids, start_stage, unhashed
from wsss_cli.stages.train_cls import load_cam_net
from wsss_cli.workdir import Shard, file_digest, write_cams


@dataclass(frozen=True)
class DumpCamsConfig:
    data: Path
    workdir: Path = unhashed()
    split: str = "train"
    cls_model: Path | None = None  # default WORKDIR/cls/model.pt
    scales: tuple[float, ...] = (1.0, 0.5, 1.5, 2.0)
    flip: bool = True
    amp: bool = True
    workers: int = unhashed(2)
    shard: str | None = unhashed(None)
    overwrite: bool = unhashed(False)
    runtime: Runtime = Runtime()


def multiscale_cams(
    model: CamNet, image: np.ndarray, classes: list[int], scales: tuple[float, ...], flip: bool,
    device: torch.device, amp: bool = False,
) -> np.ndarray:
    """Normalised CAMs ``[len(classes), H, W]`` float32 of an RGB uint8 image ``[H, W, 3]``.

    ``classes`` are 1-based foreground indices (the CAM channel is ``c - 1``).
    """
    if not classes:
        return np.zeros((0, *image.shape[:2]), np.float32)
    channels = torch.tensor([c - 1 for c in classes], dtype=torch.long, device=device)
    total = multiscale_sum(lambda x: model.cams(x)[:, channels], image, scales, flip, device, amp)
    total /= total.amax(dim=(1, 2), keepdim=True) + 1e-5
    return total.cpu().numpy()


def run(cfg: DumpCamsConfig) -> Path:
    """Write ``WORKDIR/cams/<id>.npz`` for every image of the split; returns the folder."""
    data = VocDataset(cfg.data)
    ids = data.ids(cfg.split)
    model_path = Path(cfg.cls_model or Path(cfg.workdir) / "cls" / "model.pt")
    model = load_cam_net(model_path, data)
    out_dir = Path(cfg.workdir) / "cams"
    stage = start_stage("dump-cams", cfg, out_dir, [out_dir], cfg.overwrite,
                        {"model_digest": file_digest(model_path)})
    output = lambda i: out_dir / f"{i}.npz"  # noqa: E731
    todo = pending_ids(ids, Shard.parse(cfg.shard), output)
    stage.logger.info("%d images to do (%d in split %s)", len(todo), len(ids), cfg.split)

    device, amp, loader = prepare_inference(model, cfg.runtime, cfg.amp, data, todo, cfg.workers)
    for image_id, image in cfg.runtime.progress(loader, "dump-cams", total=len(todo)):
        classes = data.labels(image_id)
        cams = multiscale_cams(model, image.numpy(), classes, cfg.scales, cfg.flip, device, amp)
        write_cams(output(image_id), np.array(classes), cams)
    finish_per_image(stage, ids, output)
    return out_dir
