"""What every stage shares: the common options, presets, and the bookkeeping around a run.

A stage's ``run`` says what it reads and writes and then reads straight through::

    with per_image_run("dump-cams", cfg, data, ids, cams_set, inputs) as job:
        for image_id in job.todo: ...

The runner checks every image of the run cheaply (a broken file stops the stage before
it starts, not hours into it), claims the outputs in ``state.json`` under the settings hash (refusing to
mix settings without ``--overwrite``), records ``config.toml``, opens the log, picks the
shard's pending ids, and on leaving counts the outputs (per-image) or marks the model
done; an error marks the run failed instead of leaving it "running".
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import MISSING, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from joblib import Parallel, delayed

import wsss_cli
from wsss_cli import ops
from wsss_cli.errors import WsssError, user_message
from wsss_cli.models.backbones import BACKBONES
from wsss_cli.models.kinds import CLASSIFIER
from wsss_cli.options import default_of, option, options_of, settings_of, unhashed
from wsss_cli.runtime import Runtime, environment, stage_logger
from wsss_cli.training import Dist, LoopConfig, from_main, init_distributed
from wsss_cli.workdir import ArtifactSet, Layout, Shard, Workdir, entry_name

T = TypeVar("T")
C = TypeVar("C")  # a stage config

# ------------------------------------------------------------------ options many stages share


def data_option(default: Any = MISSING) -> Any:
    return option(default, "Dataset root in the VOC layout (e.g. VOCdevkit/VOC2012).",
                  exists=True, file_okay=False)


def workdir_option() -> Any:
    return unhashed(None, "Experiment folder shared by all stages.", required=True, file_okay=False)


def split_option(default: str = "train") -> Any:
    return option(default, "Split name (ImageSets/Segmentation/<split>.txt).")


def workers_option() -> Any:
    return unhashed(2, "DataLoader worker processes.", min=0)


def jobs_option(what: str = "the dense CRF") -> Any:
    return unhashed(1, f"CPU processes for {what}.", min=1)


def processes_option() -> Any:
    return unhashed(1, "Split the images among this many local processes, side by side as "
                       "--shard I/N would, each with its share of the CPU cores (for one image "
                       "at a time, processes use the cores better than threads do). Ignored with "
                       "--shard.", min=1)


def amp_option() -> Any:
    return option(True, "bf16 autocast on CUDA (ignored on the CPU).")


def shard_option() -> Any:
    return unhashed(None, "Process only shard I of N (0-based); default from "
                          "SLURM_ARRAY_TASK_ID/COUNT, else everything.", metavar="I/N")


def overwrite_option() -> Any:
    return unhashed(False, "Remove the stage's earlier outputs and make them again (with "
                           "--shard: only those made with other settings); needed when they "
                           "were made with other settings.", is_flag=True)


def crf_backend_option() -> Any:
    return unhashed("auto", "Dense CRF implementation: pydensecrf (C++, CPU; pip install "
                            "wsss[pydensecrf]) or torch (CPU or CUDA; the same posteriors up "
                            "to float rounding). auto = torch on a GPU, pydensecrf on the CPU "
                            "when it is installed, torch otherwise.", choices=ops.CRF_BACKENDS)


def crf_iters_option() -> Any:
    return option(default_of(ops.dense_crf, "iters"), "Mean-field iterations of the dense CRF.",
                  min=1)


def crf_power_option(default: float | None = 1.0, **meta: Any) -> Any:
    return option(default, "Scores are raised to this power before they are normalised into the "
                           "CRF's unary: above 1 they weigh more against its pairwise terms.",
                  min=0, min_open=True, hashed="unless-default", **meta)


def method_preset(workdir: Path, cams: str, stage: str) -> dict[str, Any]:
    """The defaults the CAM method of the set ``cams`` brings to a later stage (SEAM's
    affinity-label alphas and walk): :func:`method_defaults` of the method and backbone
    dump-cams recorded; empty for sets made before dump-cams recorded them."""
    state = Workdir(workdir).stage_state(entry_name("dump-cams", cams, Layout.CAMS))
    return method_defaults(state.get("cam_method"), state.get("backbone"), stage)


def method_defaults(method: str | None, backbone: str | None, stage: str) -> dict[str, Any]:
    """The defaults CAM method ``method`` brings to ``stage`` for a classifier on
    ``backbone`` (its ``downstream[family][stage]``); empty for the plain CAM."""
    from wsss_cli.cam_methods import CAM_METHODS

    if backbone is None or method not in CAM_METHODS.names():
        return {}
    return CAM_METHODS.get(method).downstream.get(BACKBONES.get(backbone).family, {}).get(stage, {})


def set_option(default: str | None, what: str, default_text: str | None = None) -> Any:
    """The name of an artifact set under WORKDIR (a folder); the set's own settings hash
    ties it to its inputs, so the name itself is not hashed."""
    return unhashed(default, f"{what} (a folder name under WORKDIR).", metavar="NAME",
                    default_text=default_text)


def backbone_option(default: str | None = "resnet50",
                    help: str = "Network body. resnet50/101 download their ImageNet weights; "
                                "resnet38 and vgg16 need PSA's converted weights (--pretrained "
                                "PATH, docs/methods.md#backbones-and-weights); tiny is for CPU "
                                "demos and tests.",
                    default_text: str | None = None) -> Any:
    return option(default, help, choices=BACKBONES.names(), default_text=default_text)


@dataclass(frozen=True, kw_only=True)
class PerImageConfig:
    """The options of every per-image stage (CAMs, labels, predictions)."""

    data: Path = data_option()
    workdir: Path = workdir_option()
    split: str = split_option()
    shard: str | None = shard_option()
    overwrite: bool = overwrite_option()
    runtime: Runtime = field(default=Runtime(), metadata={"cli": False})


@dataclass(frozen=True, kw_only=True)
class GroundTruthConfig:
    """The options of the stages that score a work folder against ground truth."""

    data: Path = data_option()
    workdir: Path = workdir_option()
    split: str = split_option()
    crf_iters: int = crf_iters_option()
    crf_backend: str = crf_backend_option()
    jobs: int = jobs_option()
    runtime: Runtime = field(default=Runtime(), metadata={"cli": False})


@dataclass(frozen=True, kw_only=True)
class NetworkPassConfig(PerImageConfig):
    """A per-image stage that runs a network over the images (CAMs, walk, prediction)."""

    amp: bool = amp_option()
    workers: int = workers_option()


@dataclass(frozen=True, kw_only=True)
class TrainingConfig:
    """The options every training stage shares; None = the backbone's preset."""

    data: Path = data_option()
    workdir: Path = workdir_option()
    split: str = split_option()
    backbone: str | None = backbone_option(None, "Network body.", "the classifier's")
    pretrained: str | None = option(None, "Initial backbone weights.", metavar="PATH|imagenet|none",
                                    default_text="none for tiny, imagenet otherwise")
    epochs: int | None = option(None, "Training epochs.", min=1, default_text="per backbone")
    batch_size: int | None = option(None, "Images per step.", min=1, default_text="per backbone")
    optimizer: str | None = option(None, "SGD (momentum 0.9) as the papers, or AdamW.",
                                   choices=("sgd", "adamw"), default_text="per backbone")
    lr: float | None = option(None, "Base learning rate (new layers get 10x).", min=0,
                              min_open=True, default_text="per backbone")
    weight_decay: float | None = option(None, "Weight decay.", min=0, default_text="per backbone")
    crop_size: int | None = option(None, "Square training crop.", min=16, default_text="per backbone")
    resize_long: tuple[int, int] | None = option(None, "Random long-side resize range.",
                                                 metavar="MIN MAX", default_text="per backbone")
    freeze_bn: bool | None = option(None, "Keep BatchNorm statistics fixed.", secondary="train-bn",
                                    default_text="when pretrained")
    amp: bool = amp_option()
    sync_bn: bool = option(False, "SyncBatchNorm across processes under torchrun (BatchNorm not "
                                  "frozen).", is_flag=True)
    workers: int = workers_option()
    resume: bool = unhashed(False, "Continue from WORKDIR/<stage>/last.pt.", is_flag=True)
    overwrite: bool = overwrite_option()
    out: str | None = unhashed(None, "Model folder to write under WORKDIR.", metavar="NAME",
                               default_text="the model kind's: cls, aff, seg, single_stage")
    runtime: Runtime = field(default=Runtime(), metadata={"cli": False})

    def initial_backbone(self, **options: int) -> Any:
        """The backbone with its initial weights (``--pretrained``, ``--freeze-bn``);
        ``options`` go to its constructor."""
        return prepare_backbone(self.backbone, self.pretrained, self.freeze_bn,
                                Layout(self.workdir).model(CLASSIFIER), **options)

    def loop(self) -> LoopConfig:
        """The training loop's settings (call on a config filled from its preset)."""
        return LoopConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                          weight_decay=self.weight_decay, optimizer=self.optimizer,
                          workers=self.workers, amp=self.amp, sync_bn=self.sync_bn,
                          resume=self.resume)


def fill_unset(cfg: T, values: dict[str, Any]) -> T:
    """``cfg`` with the options it leaves unset (None) taken from ``values``."""
    return replace(cfg, **{k: v for k, v in values.items() if getattr(cfg, k) is None})


def fill_from_preset(cfg: T, presets: dict[str, dict[str, Any]], backbone: str | None = None) -> T:
    """Fill the options a user left unset (None) from the preset of ``backbone`` (default:
    ``cfg.backbone``).

    ``presets`` is keyed by backbone name or, for most stages, by the backbone's preset
    family (``BACKBONES``): psa, irn, tiny. BatchNorm is frozen by default when starting
    from pretrained weights: their statistics beat those of a batch of a few crops (PSA,
    IRN); a network trained from scratch must learn them.
    """
    backbone = backbone or cfg.backbone
    spec = BACKBONES.get(backbone)
    preset = presets.get(backbone, presets.get(spec.family))
    if preset is None:
        raise WsssError(f"--backbone {backbone}: this stage has no preset for it (family "
                        f"{spec.family})")
    cfg = fill_unset(cfg, preset)
    if getattr(cfg, "freeze_bn", False) is None:
        cfg = replace(cfg, freeze_bn=cfg.pretrained != "none")
    return cfg


# ------------------------------------------------------------------ the runner


@dataclass
class StageRun:
    """A running stage: where its state lives, its log, its settings hash."""

    name: str
    workdir: Workdir
    logger: logging.Logger
    digest: str
    finished_before: bool  # done earlier with exactly these settings
    writes_state: bool = True  # False on the ranks > 0 of a torchrun job
    started: float = field(default_factory=time.time)
    record: dict[str, Any] = field(default_factory=dict)  # extra fields for state.json

    def fail(self, error: BaseException) -> None:
        """Leave ``state.json`` and the log saying what stopped the run, not "running"."""
        if not self.writes_state:
            return
        message = user_message(error) or f"{type(error).__name__}: {error}".splitlines()[0]
        self.logger.error("failed: %s", message, extra={"file_only": True})
        try:
            self.workdir.update_stage(self.name, status="failed", error=message,
                                      seconds=self.elapsed())
        except OSError:  # the disk that failed the run may refuse this too
            pass

    def elapsed(self) -> float:
        return round(time.time() - self.started, 2)


@dataclass
class TrainingRun(StageRun):
    """A training stage: the folder of its ``model.pt``, ``last.pt`` and metrics."""

    model_dir: Path = Path()

    @property
    def model(self) -> Path:
        return self.model_dir / "model.pt"


@dataclass
class PerImageRun(StageRun):
    """A per-image stage: the split's ids, its output set and this shard's pending ids."""

    ids: Sequence[str] = ()
    output: ArtifactSet | None = None
    todo: list[str] = field(default_factory=list)
    runtime: Runtime = field(default_factory=Runtime)

    def progress(self, items: Iterable[T]) -> Iterable[T]:
        """A progress bar over the pending images."""
        return self.runtime.progress(items, self.name, total=len(self.todo))

    def run_each(self, work: Callable[[str], Any], jobs: int) -> None:
        """``work(image_id)`` for every pending image on ``jobs`` processes (``work``
        picklable: a module-level function or a ``functools.partial`` of one)."""
        done = Parallel(n_jobs=jobs, return_as="generator_unordered")(
            delayed(work)(image_id) for image_id in self.todo)
        for _ in self.progress(done):
            pass

    def finish(self) -> None:
        """Count the outputs of the whole split; the stage is done when every one exists.

        Counted under the workdir lock: of shards finishing together, the last to write
        must have seen every output of the others.
        """
        if not self.writes_state:
            return
        summary: dict[str, Any] = {}

        def count() -> dict[str, Any]:
            present = len(self.ids) - len(self.output.missing(self.ids))
            summary.update(status="done" if present == len(self.ids) else "partial",
                           count=present, total=len(self.ids))
            return summary

        self.workdir.update_stage(self.name, count, seconds=self.elapsed(), versions=versions(),
                                  environment=environment(), output=self.output.name, **self.record)
        self.logger.info("%d/%d outputs present (%s)", summary["count"], len(self.ids),
                         summary["status"])


def _claim(name: str, cfg: Any, outputs: Sequence[Path], log_dir: Path,
           inputs: dict[str, Any] | None) -> StageRun:
    """Record the options, check the settings against existing outputs, open the log.

    ``inputs`` ties the outputs to what they were made from (the settings hashes of the
    input sets, the digest of a model file), so that remaking an input invalidates them.
    Under ``torchrun`` (training stages only) rank 0 alone checks and writes
    ``state.json``, ``config.toml`` and the log; the other ranks take its decision (or
    its error) and log nothing.
    """
    rank = Dist.from_env()
    if rank.world > 1:
        if not isinstance(cfg, TrainingConfig):
            raise WsssError(f"{name} is not a training stage: run it as separate processes "
                            "with --shard I/N (or a SLURM array), not under torchrun")
        init_distributed(cfg.runtime)
    workdir = Workdir(cfg.workdir)
    settings = {**settings_of(cfg), **(inputs or {})}
    shard = Shard.parse(cfg.shard) if hasattr(cfg, "shard") else Shard()
    outcome: tuple[str, bool] | str = ""
    if rank.is_main:
        try:
            outcome = workdir.claim(name, settings, outputs, cfg.overwrite, shared=shard.count > 1)
            workdir.record_config(name, options_of(cfg))
        except WsssError as e:
            outcome = e.message
    outcome = from_main(outcome, rank)
    if isinstance(outcome, str):  # every rank fails alike instead of waiting for rank 0
        raise WsssError(outcome)
    digest, finished = outcome
    if rank.is_main:
        logger = stage_logger(name, log_dir / "log.txt", cfg.runtime.quiet)
    else:
        logger = logging.getLogger(f"wsss.{name}.rank{rank.rank}")
        logger.handlers[:] = [logging.NullHandler()]
        logger.propagate = False
    logger.info("wsss %s %s (settings %s)", wsss_cli.__version__, name, digest)
    if cfg.overwrite and shard.count > 1:
        logger.info("--overwrite with shard %s: only outputs made with other settings are removed",
                    shard)
    return StageRun(name, workdir, logger, digest, finished, rank.is_main)


def _check_one_producer(name: str, cfg: Any, output: ArtifactSet) -> None:
    """A set written by another stage (random-walk's and IAL's pseudo-labels) is replaced
    only with ``--overwrite``: two producers' files must not mix in one set."""
    other = Workdir(cfg.workdir).producer_of(output.name)
    if other not in (None, name) and output.folder.is_dir() and any(output.folder.iterdir()) \
            and not cfg.overwrite:
        raise WsssError(f"{output.folder}: made by '{other}'; pass --overwrite to replace it, or "
                        "write another set")


@contextmanager
def per_image_run(name: str, cfg: Any, images: Any, ids: list[str], output: ArtifactSet,
                  inputs: dict[str, Any] | None = None) -> Iterator[PerImageRun]:
    """Run a per-image stage over ``ids`` of ``images`` (a dataset or an image folder)
    writing ``output``: yields the run with this shard's pending ids; on leaving, counts
    the outputs (or marks the run failed on an error)."""
    images.check(ids, cfg.runtime.progress)
    _check_one_producer(name, cfg, output)
    base = _claim(name, cfg, [output.folder], output.folder, inputs)
    shard = Shard.parse(cfg.shard)
    job = PerImageRun(**vars(base), ids=ids, output=output,
                      todo=output.missing(shard.select(ids)), runtime=cfg.runtime)
    job.logger.info("%d images to do (%d in split %s)", len(job.todo), len(ids),
                    getattr(cfg, "split", "-"))
    try:
        yield job
    except BaseException as e:
        job.fail(e)
        raise
    job.finish()


def in_local_shards(run: Callable[[C], Path]) -> Callable[[C], Path]:
    """A per-image stage's ``run`` that, given ``cfg.processes`` > 1 and no shard of its own,
    runs as that many shards side by side in local processes (joblib's, each limited to its
    share of the cores); the first shard shows the progress. Returns the output folder."""

    @functools.wraps(run)
    def sharded(cfg: C) -> Path:
        if cfg.processes == 1 or Shard.parse(cfg.shard).count > 1:
            return run(cfg)
        shards = [replace(cfg, shard=f"{i}/{cfg.processes}", processes=1,
                          runtime=replace(cfg.runtime, quiet=cfg.runtime.quiet or i > 0))
                  for i in range(cfg.processes)]
        # the module's `run` is this wrapper: pickled by name, it runs each shard as is
        return Parallel(n_jobs=cfg.processes)(delayed(sharded)(shard) for shard in shards)[0]

    return sharded


@contextmanager
def training_run(stage: str, cfg: TrainingConfig, kind: str, data: Any, ids: list[str],
                 inputs: dict[str, Any] | None = None) -> Iterator[TrainingRun]:
    """Run a training stage on ``ids`` of ``data`` writing a model of ``kind`` (to ``--out``
    or the kind's folder): yields the run (``finished_before`` when that model exists with
    these settings); on leaving, marks it done with ``job.record`` (or failed on an error)."""
    data.check(ids, cfg.runtime.progress)
    layout = Layout(cfg.workdir)
    default = layout.model_dir(kind).name
    folder = cfg.out or default
    model_dir = layout.root / folder
    name = entry_name(stage, folder, default)
    base = _claim(name, cfg, [model_dir / "model.pt", model_dir / "last.pt"], model_dir, inputs)
    job = TrainingRun(**vars(base), model_dir=model_dir)
    job.finished_before = job.finished_before and job.model.exists()
    if job.finished_before:
        job.logger.info("already trained with these settings: %s", job.model)
    try:
        yield job
    except BaseException as e:
        job.fail(e)
        raise
    if job.writes_state and not job.finished_before:
        job.workdir.update_stage(job.name, status="done", seconds=job.elapsed(), versions=versions(),
                                 environment=environment(),
                                 **job.record)


def versions() -> dict[str, str]:
    import torch

    return {"wsss": wsss_cli.__version__, "torch": torch.__version__, "numpy": np.__version__}


def prepare_backbone(name: str, pretrained: str, freeze_bn: bool, classifier: Path,
                     **options: int) -> Any:
    """Build backbone ``name`` (``options`` go to its constructor) with its initial weights.

    ``pretrained``: ``none``, ``imagenet``, a path, or ``cls`` for the backbone of the
    trained classifier at ``classifier`` (same backbone required).
    """
    from wsss_cli.models.backbones import build_backbone, freeze_batchnorm
    from wsss_cli.models.weights import load_pretrained
    from wsss_cli.training import check_meta, load_checkpoint

    backbone = build_backbone(name, **options)
    if pretrained == "cls":
        ckpt = load_checkpoint(classifier)
        check_meta(classifier, ckpt.get("meta", {}), {"backbone": name})
        prefix = "backbone."
        backbone.load_state_dict({k[len(prefix):]: v for k, v in ckpt["model"].items()
                                  if k.startswith(prefix)})
    else:
        load_pretrained(backbone, name, pretrained)
    if freeze_bn:
        freeze_batchnorm(backbone)
    return backbone
