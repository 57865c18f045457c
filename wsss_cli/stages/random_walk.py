"""random-walk: CAMs propagated by AffinityNet's affinities -> pseudo-label PNGs (PSA §3.4).

Per image (PSA's ``infer_aff.py``): the full image is padded to a multiple of the
stride, AffinityNet gives features f on the stride grid, the scores
``[(1 - max CAM)^alpha, CAMs]`` are average-pooled to that grid and walked with
``ops.random_walk`` (beta, logt), upsampled, cropped and arg-maxed. Optionally a dense
CRF on the walked scores sharpens the boundaries.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from wsss_cli import ops
from wsss_cli.data.dataset import VocDataset
from wsss_cli.inference import LabelTask, prepare_inference, write_labels
from wsss_cli.models.kinds import AFFINITY, load_model
from wsss_cli.options import default_of, option
from wsss_cli.stages.common import NetworkPassConfig, crf_iters_option, jobs_option, per_image_run, set_option
from wsss_cli.walk import default_alpha, walk_scores
from wsss_cli.workdir import Layout, Workdir, entry_name, file_digest, read_cams

STAGE = "random-walk"


@dataclass(frozen=True, kw_only=True)
class RandomWalkConfig(NetworkPassConfig):
    aff_model: Path | None = option(None, "AffinityNet checkpoint.", dir_okay=False,
                                    default_text="WORKDIR/aff/model.pt")
    alpha: float | None = option(None, "Background score (1 - max CAM)^alpha.", min=0, min_open=True,
                                 default_text="PSA's 16; 8 for tiny, whose from-scratch CAMs stay "
                                              "~0.2-0.3 off the objects")
    beta: float = option(float(default_of(ops.random_walk, "beta")), "Affinity sharpening a^beta.",
                         min=0, min_open=True)
    logt: int | None = option(None, "The walk takes 2^logt steps.", min=0, max=12,
                              default_text="auto, PSA's 8 on VOC-sized images (~63x47 grid), "
                                           "8 + 2 log2(grid side / 54) elsewhere, e.g. 6 on 128 px "
                                           "images at the auto --walk-scale 2")
    radius: int = option(default_of(ops.random_walk, "radius"),
                         "Neighbourhood radius on the feature grid.", min=2)
    walk_scale: float | None = option(None, "Resize images by this factor before AffinityNet and "
                                            "the walk.", min=0.25, max=8,
                                      default_text="auto, the integer factor bringing the short "
                                                   "side to 256 px: 1 on VOC, 2 at 128 px")
    crf: bool = option(True, "Dense CRF on the walked scores.")
    crf_iters: int = crf_iters_option()
    out: str = option(Layout.PSEUDO, "Pseudo-label set to write (a folder name under WORKDIR).",
                      metavar="NAME")
    cams: str = set_option(Layout.CAMS, "CAM set to read")
    jobs: int = jobs_option()


def run(cfg: RandomWalkConfig) -> Path:
    """Write ``WORKDIR/<out>/<id>.png`` (VOC palette, image size) for the split."""
    data = VocDataset(cfg.data)
    layout = Layout(cfg.workdir)
    model_path = Path(cfg.aff_model or layout.model(AFFINITY))
    model, meta = load_model(model_path, (AFFINITY,))
    if cfg.alpha is None:
        cfg = replace(cfg, alpha=default_alpha(meta["backbone"]))
    cams, labels = layout.cams(cfg.cams), layout.labels(cfg.out)
    inputs = {**Workdir(cfg.workdir).producer_hashes(entry_name("dump-cams", cfg.cams, Layout.CAMS)),
              "model_digest": file_digest(model_path)}
    with per_image_run(entry_name(STAGE, cfg.out, Layout.PSEUDO), cfg, data, data.ids(cfg.split), labels,
                       inputs) as job:
        device, amp, loader = prepare_inference(model, cfg.runtime, cfg.amp, data, job.todo,
                                                cfg.workers)

        def walked() -> Iterator[LabelTask]:
            for image_id, image in loader:
                image = image.numpy()
                classes, scores = read_cams(cams.path(image_id))
                scores = walk_scores(model, image, scores, cfg.alpha, cfg.beta, cfg.logt,
                                     cfg.radius, device, amp, cfg.walk_scale)
                yield labels.path(image_id), image, scores, classes

        write_labels(walked(), cfg.crf, cfg.crf_iters, cfg.jobs, job.progress)
    return labels.folder
