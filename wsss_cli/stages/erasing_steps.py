"""Adversarial erasing's steps (AE-PSL, ``train-cls --method erasing``).

Step ``t`` trains a plain CAM classifier (``<out>/step<t>/model.pt``, train-cls's options)
on the images with ``<out>/step<t-1>/erased`` set to the mean; then, unless it is the last
step, mines its regions: its multi-scale CAMs of each image's classes on the erased image,
divided by their maximum, reach the threshold; their union with the earlier steps' is
``<out>/step<t>/erased``. Last, the steps' networks are saved together as the method's
classifier (``<out>/model.pt``). Every step is its own cached run, so a killed run keeps
the steps it finished and ``--resume`` continues the one it was in.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from wsss_cli.cam_methods.cam import CAM
from wsss_cli.cam_methods.erasing import Erasing
from wsss_cli.data.augment import erase_pixels
from wsss_cli.data.dataset import open_dataset
from wsss_cli.data.io import read_mask, write_palette_png
from wsss_cli.inference import prepare_inference
from wsss_cli.models.erasing import ErasingNet
from wsss_cli.models.kinds import CLASSIFIER, load_model
from wsss_cli.options import option
from wsss_cli.stages.common import NetworkPassConfig, per_image_run, training_run
from wsss_cli.stages.dump_cams import multiscale_cams
from wsss_cli.stages.train_cls import STAGE, TrainClsConfig, train_network
from wsss_cli.training import save_model
from wsss_cli.workdir import ArtifactSet, ErasingStep, Layout, Workdir, entry_name, file_digest

REGIONS_STAGE = "erasing-regions"


@dataclass(frozen=True, kw_only=True)
class ErasedRegionsConfig(NetworkPassConfig):
    model: str = option("cls", "Classifier folder.")
    step: int = option(1, "The step whose regions are mined.", min=1)
    threshold: float = option(0.5, "Where a step's max-normalised CAM reaches this.", min=0, max=1)
    scales: tuple[float, ...] = option((1.0, 0.5, 1.5, 2.0), "Inference scales (each also flipped).")


def train_steps(cfg: TrainClsConfig, method: Erasing, name: str) -> Path:
    """Train the steps of a resolved train-cls config; returns ``<out>/model.pt``."""
    default = Layout(cfg.workdir).model_dir(CLASSIFIER).name
    folder = cfg.out or default
    # a step is a plain CAM classifier: the erasing options do not change it
    plain = replace(cfg, method="cam", erase_steps=None, erase_threshold=None)
    steps = [ErasingStep(folder, t) for t in range(1, method.steps + 1)]
    erased, models = None, []
    for step in steps:
        models.append(train_network(replace(plain, out=step.network), CAM, "cam", erased))
        if step.index < method.steps:
            erased = mine_erased_regions(ErasedRegionsConfig(
                data=cfg.data, workdir=cfg.workdir, split=cfg.split, overwrite=cfg.overwrite,
                runtime=cfg.runtime, amp=cfg.amp, workers=cfg.workers, model=folder,
                step=step.index, threshold=method.threshold))
    return _save_steps(cfg, method, name, entry_name(STAGE, folder, default), models)


def _save_steps(cfg: TrainClsConfig, method: Erasing, name: str, entry: str,
                models: list[Path]) -> Path:
    """The steps' networks as one classifier of method ``name`` (state entry ``entry``)."""
    data = open_dataset(cfg.data)
    inputs = {f"step{t}_digest": file_digest(p) for t, p in enumerate(models, 1)}
    # saving is cheap: a classifier this method saved before (other steps) is simply replaced
    settings = Workdir(cfg.workdir).state().get(entry, {}).get("settings", {})
    cfg = replace(cfg, overwrite=cfg.overwrite or settings.get("method") == name)
    with training_run(STAGE, cfg, CLASSIFIER, data, data.ids(cfg.split), inputs) as job:
        if not job.finished_before:
            loaded = [load_model(p, (CLASSIFIER,), data.num_classes) for p in models]
            nets, meta = [net for net, _ in loaded], dict(loaded[0][1])
            meta.update(method=name, method_options=method.recorded())
            save_model(job.model, ErasingNet(nets, method.threshold), meta)
            job.logger.info("%d steps saved as one classifier: %s", len(nets), job.model)
    return job.model


def mine_erased_regions(cfg: ErasedRegionsConfig) -> ArtifactSet:
    """Write ``<model>/step<k>/erased/<id>.png`` (1 = erased) for every image; returns
    the set."""
    data = open_dataset(cfg.data)
    layout = Layout(cfg.workdir)
    step, before = ErasingStep(cfg.model, cfg.step), ErasingStep(cfg.model, cfg.step - 1)
    model_path = layout.root / step.network / "model.pt"
    model, _ = load_model(model_path, (CLASSIFIER,), data.num_classes)
    out, previous = layout.labels(step.erased), layout.labels(before.erased) if cfg.step > 1 else None
    workdir = Workdir(cfg.workdir)
    inputs = {"model_digest": file_digest(model_path)}
    if previous is not None:
        inputs.update(workdir.producer_hashes(entry_name(REGIONS_STAGE, previous.name, "")))
    with per_image_run(entry_name(REGIONS_STAGE, out.name, ""), cfg, data, data.ids(cfg.split),
                       out, inputs) as job:
        device, amp, loader = prepare_inference(model, cfg.runtime, cfg.amp, data, job.todo,
                                                cfg.workers)
        for image_id, image in job.progress(loader):
            erased = np.zeros(image.shape[:2], bool) if previous is None else \
                read_mask(previous.path(image_id)) > 0
            write_palette_png(out.path(image_id), (erased | _regions(
                model, erase_pixels(image.numpy(), erased), data.labels(image_id), cfg, device,
                amp)).astype(np.uint8))
    return out


def _regions(model: torch.nn.Module, image: np.ndarray, classes: list[int],
             cfg: ErasedRegionsConfig, device: torch.device, amp: bool) -> np.ndarray:
    """Bool ``[H, W]``: where a class of the image has its normalised CAM >= the threshold."""
    maps = multiscale_cams(model, CAM, image, classes, cfg.scales, True, device, amp)
    return (maps >= cfg.threshold).any(0) if len(maps) else np.zeros(image.shape[:2], bool)
