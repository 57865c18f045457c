"""random-walk: CAMs propagated by AffinityNet's affinities -> pseudo-label PNGs (PSA §3.4).

Per image (PSA's ``infer_aff.py``): the full image is padded to a multiple of the
stride, AffinityNet gives features f on the stride grid, the scores
``[(1 - max CAM)^alpha, CAMs]`` are average-pooled to that grid and walked with
``ops.random_walk`` (beta, logt), upsampled, cropped and arg-maxed. With the ``threshold``
background (IRN's) only the CAMs walk and a constant background is put back after. A
dense CRF on the walked scores (raised to ``crf_power``) sharpens the boundaries. With
``--saliency``, a class-agnostic saliency map scales the walked background per pixel
(``walk.with_saliency``) before the CRF: saliency says where an object is, the walked CAMs
which one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from wsss_cli import ops
from wsss_cli.data.dataset import open_dataset
from wsss_cli.data.saliency import Saliency, saliency_option
from wsss_cli.errors import WsssError
from wsss_cli.inference import Crf, LabelTask, prepare_inference, write_labels
from wsss_cli.models.kinds import AFFINITY, load_model
from wsss_cli.options import default_of, option
from wsss_cli.stages.common import (
    NetworkPassConfig,
    crf_backend_option,
    crf_iters_option,
    crf_power_option,
    fill_from_preset,
    fill_unset,
    in_local_shards,
    jobs_option,
    method_preset,
    per_image_run,
    processes_option,
    set_option,
)
from wsss_cli.stages.train_aff import STAGE as TRAIN_AFF
from wsss_cli.walk import (
    BACKGROUNDS,
    PRESETS,
    WalkSettings,
    logt_on_voc,
    walk_scores,
    with_saliency,
)
from wsss_cli.workdir import Layout, Workdir, entry_name, file_digest, read_cams

STAGE = "random-walk"


@dataclass(frozen=True, kw_only=True)
class RandomWalkConfig(NetworkPassConfig):
    PRESETS: ClassVar[dict[str, dict]] = PRESETS
    aff_model: Path | None = option(None, "AffinityNet checkpoint.", dir_okay=False,
                                    default_text="WORKDIR/aff/model.pt")
    background: str | None = option(None, "The walk's background: psa = the channel (1 - max "
                                          "CAM)^alpha walked with the CAMs; threshold = IRN's "
                                          "constant --bg-threshold against each walked CAM "
                                          "divided by its maximum.", choices=BACKGROUNDS,
                                    default_text="per backbone")
    alpha: float | None = option(None, "Background exponent of --background psa.", min=0,
                                 min_open=True, default_text="per backbone")
    bg_threshold: float | None = option(None, "Background threshold of --background threshold.",
                                        min=0, max=1, default_text="per backbone")
    beta: float = option(float(default_of(ops.random_walk, "beta")), "Affinity sharpening a^beta.",
                         min=0, min_open=True)
    logt: int | None = option(None, "The walk takes 2^logt steps.", min=0, max=12,
                              default_text="auto: on a VOC-sized grid (~63x47) PSA's 8 (3 for "
                                           "tiny), + 2 log2(grid side / 54) elsewhere")
    radius: int = option(default_of(ops.random_walk, "radius"),
                         "Neighbourhood radius on the feature grid.", min=2)
    walk_scale: float | None = option(None, "Resize images by this factor before AffinityNet and "
                                            "the walk.", min=0.25, max=8,
                                      default_text="auto: 1 when the short side is 256 px or "
                                                   "more (VOC), else the integer factor (at most "
                                                   "4) bringing it nearest 512 px, 4 at 128 px")
    saliency: str | None = saliency_option("Scale the walked background by (2 (1 - saliency))"
                                           "^--saliency-power per pixel (saliency 0-1); by "
                                           "default the maps the AffinityNet's affinity labels "
                                           "were made with, if any (--saliency-power 0: none)")
    saliency_power: float = option(0.5, "How strongly --saliency moves the background: 0 = "
                                        "not at all.", min=0, hashed="unless-default")
    crf: bool = option(True, "Dense CRF on the walked scores.")
    no_crf_out: str | None = option(None, "Also write the labels before the CRF to this set (a "
                                          "folder name under WORKDIR): one walk for both, as "
                                          "wsss demo and diagnose use them.", metavar="NAME",
                                    hashed="unless-default")
    crf_iters: int = crf_iters_option()
    crf_backend: str = crf_backend_option()
    crf_power: float | None = crf_power_option(None, default_text="per backbone")
    out: str = option(Layout.PSEUDO, "Pseudo-label set to write (a folder name under WORKDIR).",
                      metavar="NAME")
    cams: str = set_option(Layout.CAMS, "CAM set to read")
    jobs: int = jobs_option()
    processes: int = processes_option()


@in_local_shards
def run(cfg: RandomWalkConfig) -> Path:
    """Write ``WORKDIR/<out>/<id>.png`` (VOC palette, image size) for the split."""
    data = open_dataset(cfg.data)
    layout = Layout(cfg.workdir)
    model_path = Path(cfg.aff_model or layout.model(AFFINITY))
    model, meta = load_model(model_path, (AFFINITY,))
    cfg = fill_unset(cfg, method_preset(cfg.workdir, cfg.cams, STAGE))
    cfg = fill_from_preset(cfg, PRESETS, meta["backbone"])
    settings = walk_settings(cfg, meta["backbone"])
    if cfg.no_crf_out is not None and not cfg.crf:
        raise WsssError("--no-crf-out: with --no-crf the labels have no CRF to leave out; use --out")
    cams, labels = layout.cams(cfg.cams), layout.labels(cfg.out)
    ids = data.ids(cfg.split)
    cfg = fill_unset(cfg, {"saliency": learnt_saliency(layout, model_path)})
    saliency = None if cfg.saliency is None else Saliency.checked(cfg.saliency, data, ids)
    before_crf = None if cfg.no_crf_out is None else layout.labels(cfg.no_crf_out)
    inputs = {**Workdir(cfg.workdir).producer_hashes(entry_name("dump-cams", cfg.cams, Layout.CAMS)),
              "model_digest": file_digest(model_path)}
    with per_image_run(entry_name(STAGE, cfg.out, Layout.PSEUDO), cfg, data, ids, labels,
                       inputs) as job:
        if before_crf is not None:
            job.record.update(also_writes=[before_crf.name])
        device, amp, loader = prepare_inference(model, cfg.runtime, cfg.amp, data, job.todo,
                                                cfg.workers)

        def walked() -> Iterator[LabelTask]:
            for image_id, image in loader:
                image = image.numpy()
                classes, scores = read_cams(cams.path(image_id))
                scores = walk_scores(model, image, scores, settings, device, amp)
                if saliency is not None:
                    scores = with_saliency(scores, saliency(image_id, image), cfg.saliency_power)
                yield labels.path(image_id), image, scores, classes

        write_labels(walked(), Crf.of(cfg) if cfg.crf else None, cfg.jobs, job.progress,
                     crf_power=cfg.crf_power, before_crf=before_crf)
    return labels.folder


def learnt_saliency(layout: Layout, model_path: Path) -> str | None:
    """The saliency maps (``--saliency``) of the affinity labels the AffinityNet at
    ``model_path`` learnt, as this work folder recorded them; None for labels made without,
    or a model trained elsewhere."""
    folder = model_path.parent
    if folder.parent.resolve() != layout.root.resolve():
        return None
    workdir = Workdir(layout.root)
    trained = workdir.stage_state(entry_name(TRAIN_AFF, folder.name, layout.model_dir(AFFINITY).name))
    labels = next((key.removeprefix("input:") for key in trained.get("settings", {})
                   if key.startswith("input:make-aff-labels")), None)
    return None if labels is None else workdir.stage_state(labels).get("settings", {}).get("saliency")


def walk_settings(cfg: RandomWalkConfig, backbone: str) -> WalkSettings:
    """The walk's settings of a config filled from its preset."""
    return WalkSettings(background=cfg.background, alpha=cfg.alpha, bg_threshold=cfg.bg_threshold,
                        beta=cfg.beta, radius=cfg.radius, logt=cfg.logt,
                        logt_on_voc=logt_on_voc(backbone), scale=cfg.walk_scale)
