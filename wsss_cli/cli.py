"""The ``wsss`` command line: thin commands that parse options and call one stage each."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from wsss_cli import __version__
from wsss_cli.config import GLOBAL_OPTIONS, default_map
from wsss_cli.runtime import Runtime

CONTEXT = {"show_default": True, "help_option_names": ["-h", "--help"], "max_content_width": 100}


class FloatList(click.ParamType):
    """Comma-separated floats (or a TOML list): ``1.0,0.5,1.5,2.0``."""

    name = "FLOATS"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[float, ...]:
        if isinstance(value, (list, tuple)):
            return tuple(float(v) for v in value)
        try:
            return tuple(float(v) for v in str(value).split(",") if v.strip())
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of numbers", param, ctx)


def _options(*decorators: Callable) -> Callable:
    def apply(f: Callable) -> Callable:
        for d in reversed(decorators):
            f = d(f)
        return f

    return apply


existing_dir = click.Path(exists=True, file_okay=False, path_type=Path)
data_option = click.option("--data", type=existing_dir, required=True,
                           help="Dataset root in the VOC layout (e.g. VOCdevkit/VOC2012).")
workdir_option = click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
                              required=True, help="Experiment folder shared by all stages.")
split_option = click.option("--split", default="train",
                            help="Split name (ImageSets/Segmentation/<split>.txt).")
workers_option = click.option("--workers", default=2, type=click.IntRange(0),
                              help="DataLoader worker processes.")
amp_option = click.option("--amp/--no-amp", default=True,
                          help="bf16 autocast and channels_last on CUDA (ignored on the CPU).")
overwrite_option = click.option("--overwrite", is_flag=True,
                                help="Replace outputs made earlier with other settings.")
shard_option = click.option("--shard", metavar="I/N", default=None,
                            help="Process only shard I of N (0-based); default from "
                                 "SLURM_ARRAY_TASK_ID/COUNT, else everything.")
jobs_option = click.option("--jobs", default=1, type=click.IntRange(1),
                           help="CPU processes for the dense CRF.")
crf_iters_option = click.option("--crf-iters", default=10, type=click.IntRange(1),
                                help="Mean-field iterations of the dense CRF.")
BACKBONE_CHOICE = click.Choice(["tiny", "resnet38", "resnet50", "resnet101", "vgg16"])
classifier_options = _options(
    click.option("--backbone", default="resnet38", type=BACKBONE_CHOICE,
                 help="Network body; 'tiny' is for CPU demos and tests."),
    click.option("--pretrained", default=None, metavar="PATH|imagenet|none",
                 help="Initial backbone weights. [default: none for tiny, imagenet otherwise]"),
)
training_options = _options(
    click.option("--epochs", type=click.IntRange(1), default=None,
                 help="Training epochs. [default: per backbone]"),
    click.option("--batch-size", type=click.IntRange(1), default=None,
                 help="Images per step. [default: per backbone]"),
    click.option("--optimizer", type=click.Choice(["sgd", "adamw"]), default=None,
                 help="SGD (momentum 0.9) as the papers, or AdamW. [default: per backbone]"),
    click.option("--lr", type=click.FloatRange(0, min_open=True), default=None,
                 help="Base learning rate (new layers get 10x). [default: per backbone]"),
    click.option("--weight-decay", type=click.FloatRange(0), default=None,
                 help="SGD weight decay. [default: per backbone]"),
    click.option("--crop-size", type=click.IntRange(16), default=None,
                 help="Square training crop. [default: per backbone]"),
    click.option("--resize-long", type=(int, int), default=None, metavar="MIN MAX",
                 help="Random long-side resize range. [default: per backbone]"),
    click.option("--freeze-bn/--train-bn", default=None,
                 help="Keep BatchNorm statistics fixed. [default: when pretrained]"),
    workers_option,
    amp_option,
    click.option("--sync-bn", is_flag=True,
                 help="SyncBatchNorm across processes under torchrun (BatchNorm not frozen)."),
    click.option("--resume", is_flag=True, help="Continue from WORKDIR/<stage>/last.pt."),
    overwrite_option,
)


# command -> (module under wsss_cli.stages, config class); imported on use so that
# `wsss --help` does not pay for importing torch
STAGES = {
    "train-cls": ("train_cls", "TrainClsConfig"),
    "dump-cams": ("dump_cams", "DumpCamsConfig"),
    "eval-cams": ("eval_cams", "EvalCamsConfig"),
    "eval": ("evaluate", "EvalConfig"),
    "make-aff-labels": ("make_aff_labels", "MakeAffLabelsConfig"),
    "train-aff": ("train_aff", "TrainAffConfig"),
    "random-walk": ("random_walk", "RandomWalkConfig"),
    "train-seg": ("train_seg", "TrainSegConfig"),
    "train-single-stage": ("train_single_stage", "TrainSingleStageConfig"),
    "predict": ("predict", "PredictConfig"),
    "report": ("report", "ReportConfig"),
    "demo": ("demo", "DemoConfig"),
}
PSEUDO_STAGES = ("dump-cams", "make-aff-labels", "train-aff", "random-walk")


def _stage(command: str) -> tuple[Any, type]:
    module_name, config_name = STAGES[command]
    module = importlib.import_module(f"wsss_cli.stages.{module_name}")
    return module, getattr(module, config_name)


def _config(command: str, ctx: click.Context, options: dict) -> Any:
    return _stage(command)[1](**options, runtime=ctx.obj)


def _run_stage(ctx: click.Context, options: dict) -> Any:
    """Build the command's config dataclass from its options and run its stage."""
    return _stage(ctx.command.name)[0].run(_config(ctx.command.name, ctx, options))


@click.group(context_settings=CONTEXT)
@click.option("--config", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="TOML file with option values: top-level keys for every command, "
                   "[command] sections for one.")
@click.option("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N.")
@click.option("--seed", default=0, type=int, help="Seed for shuffling, augmentation and init.")
@click.option("--quiet", is_flag=True, help="No progress bars or log lines on the terminal.")
@click.version_option(__version__, prog_name="wsss")
@click.pass_context
def main(ctx: click.Context, config: Path | None, device: str, seed: int, quiet: bool) -> None:
    """wsss: weakly-supervised semantic segmentation from image-level labels.

    Classic pipeline: train-cls -> dump-cams -> make-aff-labels -> train-aff ->
    random-walk -> train-seg -> predict. Every stage caches its outputs in --workdir and
    resumes where it stopped. Start with `wsss demo`.
    """
    values = {"device": device, "seed": seed, "quiet": quiet}
    if config is not None:
        ctx.default_map, globals_ = default_map(config, main.commands)
        for name in GLOBAL_OPTIONS:
            if name in globals_ and ctx.get_parameter_source(name).name == "DEFAULT":
                values[name] = globals_[name]
    ctx.obj = Runtime(**values)


@main.command("toy-data")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--num-train", default=300, type=click.IntRange(1), help="Training images.")
@click.option("--num-val", default=100, type=click.IntRange(1), help="Validation images.")
@click.option("--size", default=128, type=click.IntRange(48), help="Typical image side in pixels.")
@click.pass_context
def toy_data(ctx: click.Context, out: Path, num_train: int, num_val: int, size: int) -> None:
    """Write the synthetic toy dataset (5 shape classes) to OUT in the VOC layout."""
    from wsss_cli.data.toy import make_toy_dataset

    make_toy_dataset(out, num_train, num_val, size, seed=ctx.obj.seed, progress=ctx.obj.progress)
    click.echo(f"wrote {num_train} train + {num_val} val images to {out}")


@main.command("train-cls")
@data_option
@workdir_option
@split_option
@classifier_options
@training_options
@click.pass_context
def train_cls(ctx: click.Context, **options: Any) -> None:
    """Train the multi-label classifier (CAM network) -> WORKDIR/cls/model.pt."""
    click.echo(_run_stage(ctx, options))


@main.command("dump-cams")
@data_option
@workdir_option
@split_option
@click.option("--cls-model", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Classifier checkpoint. [default: WORKDIR/cls/model.pt]")
@click.option("--scales", type=FloatList(), default="1.0,0.5,1.5,2.0",
              help="Inference scales (each also flipped).")
@click.option("--flip/--no-flip", default=True, help="Add the mirrored image at every scale.")
@amp_option
@workers_option
@shard_option
@overwrite_option
@click.pass_context
def dump_cams(ctx: click.Context, **options: Any) -> None:
    """Multi-scale + flip CAMs of a split -> WORKDIR/cams/<id>.npz (float16)."""
    click.echo(_run_stage(ctx, options))


@main.command("eval-cams")
@data_option
@workdir_option
@split_option
@click.option("--crf/--no-crf", default=False,
              help="Also evaluate CAM + dense CRF at the best threshold.")
@jobs_option
@click.pass_context
def eval_cams(ctx: click.Context, **options: Any) -> None:
    """mIoU of WORKDIR/cams against ground truth, sweeping the background threshold 0-0.60."""
    _run_stage(ctx, options)


@main.command("eval")
@click.option("--pred", type=existing_dir, required=True, help="Folder of predicted PNGs.")
@click.option("--gt", type=existing_dir, required=True, help="Folder of ground-truth PNGs.")
@click.option("--num-classes", type=click.IntRange(2), default=None,
              help="Classes incl. background. [default: from --classes, else 21]")
@click.option("--classes", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="classes.txt (background first) for the table's names.")
@click.option("--ids", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Split file of ids to evaluate. [default: every PNG in --pred]")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSON result. [default: PRED/eval.json]")
@click.pass_context
def evaluate(ctx: click.Context, **options: Any) -> None:
    """Per-class IoU and mIoU of predicted PNGs against ground truth (255 = ignore)."""
    _run_stage(ctx, options)


@main.command("make-aff-labels")
@data_option
@workdir_option
@split_option
@click.option("--alpha-low", default=4.0, type=click.FloatRange(0, min_open=True),
              help="Background exponent of the strong background (confident foreground).")
@click.option("--alpha-high", default=32.0, type=click.FloatRange(0, min_open=True),
              help="Background exponent of the weak background (confident background).")
@crf_iters_option
@jobs_option
@shard_option
@overwrite_option
@click.pass_context
def make_aff_labels(ctx: click.Context, **options: Any) -> None:
    """CAMs -> two backgrounds -> dense CRF -> WORKDIR/aff_labels/<id>.png
    (0 background, c class, 255 unsure)."""
    click.echo(_run_stage(ctx, options))


@main.command("train-aff")
@data_option
@workdir_option
@split_option
@click.option("--backbone", default=None, type=BACKBONE_CHOICE,
              help="Network body. [default: the classifier's]")
@click.option("--pretrained", default=None, metavar="PATH|imagenet|none|cls",
              help="Initial backbone weights; cls = the trained classifier's. "
                   "[default: cls for tiny, imagenet otherwise]")
@training_options
@click.pass_context
def train_aff(ctx: click.Context, **options: Any) -> None:
    """Train AffinityNet on WORKDIR/aff_labels -> WORKDIR/aff/model.pt."""
    click.echo(_run_stage(ctx, options))


@main.command("random-walk")
@data_option
@workdir_option
@split_option
@click.option("--aff-model", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="AffinityNet checkpoint. [default: WORKDIR/aff/model.pt]")
@click.option("--alpha", default=None, type=click.FloatRange(0, min_open=True),
              help="Background score (1 - max CAM)^alpha. [default: PSA's 16; 8 for tiny, whose "
                   "from-scratch CAMs stay ~0.2-0.3 off the objects]")
@click.option("--beta", default=8.0, type=click.FloatRange(0, min_open=True),
              help="Affinity sharpening a^beta.")
@click.option("--logt", default=None, type=click.IntRange(0, 12),
              help="The walk takes 2^logt steps. [default: auto, PSA's 8 on VOC-sized images "
                   "(~63x47 grid), 8 + 2 log2(grid side / 54) elsewhere, e.g. 4 at 128 px]")
@click.option("--radius", default=5, type=click.IntRange(2),
              help="Neighbourhood radius on the feature grid.")
@click.option("--walk-scale", type=click.FloatRange(0.25, 8), default=None,
              help="Resize images by this factor before AffinityNet and the walk. [default: auto, "
                   "the integer factor bringing the short side to 256 px: 1 on VOC, 2 at 128 px]")
@click.option("--crf/--no-crf", default=True, help="Dense CRF on the walked scores.")
@crf_iters_option
@click.option("--out", default="pseudo", help="Output folder name under WORKDIR.")
@amp_option
@workers_option
@jobs_option
@shard_option
@overwrite_option
@click.pass_context
def random_walk(ctx: click.Context, **options: Any) -> None:
    """CAMs + AffinityNet -> random walk (+ CRF) -> WORKDIR/pseudo/<id>.png pseudo-labels."""
    click.echo(_run_stage(ctx, options))


def _make_pseudo(**options: Any) -> None:
    """Each stage gets its own options; one not given to make-pseudo falls back to the
    stage's [section] of --config, then to the stage's default."""
    from wsss_cli.stages import make_pseudo as stage

    ctx = click.get_current_context()
    given = {k: v for k, v in options.items()
             if ctx.get_parameter_source(k).name != "DEFAULT"}
    configs = {}
    for name in PSEUDO_STAGES:
        command = main.commands[name]
        values = {p.name: p.get_default(ctx) for p in command.params if p.name}
        values.update((ctx.find_root().default_map or {}).get(name, {}))
        values.update({k: v for k, v in given.items() if k in values})
        values = {k: _convert(command, k, v, ctx) for k, v in values.items()}
        configs[name.replace("-", "_")] = _config(name, ctx, values)
    click.echo(stage.run(stage.MakePseudoConfig(**configs)))


def _convert(command: click.Command, name: str, value: Any, ctx: click.Context) -> Any:
    param = next(p for p in command.params if p.name == name)
    return param.type_cast_value(ctx, value) if value is not None else None


def _union_params(commands: list[click.Command]) -> list[click.Parameter]:
    seen, params = set(), []
    for command in commands:
        for p in command.params:
            if p.name not in seen and p.name != "help":
                seen.add(p.name)
                params.append(p)
    return params


main.add_command(click.Command(
    "make-pseudo",
    callback=_make_pseudo,
    params=_union_params([main.commands[n] for n in PSEUDO_STAGES]),
    context_settings=CONTEXT,
    help="dump-cams -> make-aff-labels -> train-aff -> random-walk, each stage skipped when "
         "its outputs are complete and made with the same settings. Takes every option of "
         "those stages ([dump-cams], [train-aff], ... sections of --config work too).",
    short_help="CAMs -> affinity labels -> AffinityNet -> random walk, cached.",
))


@main.command("train-seg")
@data_option
@workdir_option
@split_option
@classifier_options
@click.option("--labels", type=existing_dir, default=None,
              help="Folder of <id>.png training labels (255 = ignore). [default: WORKDIR/pseudo]")
@click.option("--head", type=click.Choice(["aspp", "largefov"]), default="aspp",
              help="DeepLab v2 ASPP (rates 6/12/18/24) or DeepLab v1 LargeFOV (rate 12).")
@click.option("--refine/--no-refine", default=None,
              help="Sharpen the head's scores with the backbone's stride-4 map (a DeepLab v3+ "
                   "style decoder). [default: on for tiny, off for the papers' backbones]")
@click.option("--scale-range", type=(float, float), default=(0.5, 1.5), metavar="MIN MAX",
              help="Random rescaling range of the training images.")
@click.option("--ignore-band", type=click.IntRange(0), default=None, metavar="PX",
              help="Ignore the labels' background within PX pixels of an object: pseudo-labels "
                   "cut objects' thin ends short, so that background is their least reliable "
                   "label. 0 = off. [default: 20 for tiny (128 px images), 0 for the papers' "
                   "backbones, as DeepLab]")
@click.option("--ignore-band-color", type=click.FloatRange(0), default=None, metavar="RATIO",
              help="Ignore only the band's pixels that look like the object: colour distance "
                   "(CIELAB) to the object's mean below RATIO x that to the band's background "
                   "mean. 0 = the whole band. [default: 1.5 for tiny, 0 for the others]")
@click.option("--val-split", default=None,
              help="Split evaluated against its ground truth during training (e.g. val).")
@click.option("--val-every", default=1, type=click.IntRange(1),
              help="Evaluate --val-split every N epochs.")
@training_options
@click.pass_context
def train_seg(ctx: click.Context, **options: Any) -> None:
    """Train the DeepLab-style segmentation network on pseudo-labels -> WORKDIR/seg/model.pt."""
    click.echo(_run_stage(ctx, options))


@main.command("train-single-stage")
@data_option
@workdir_option
@split_option
@classifier_options
@click.option("--pretrain-epochs", type=click.IntRange(0), default=None,
              help="Epochs of classification loss only before the mask loss joins. "
                   "[default: per backbone; the paper's 5 of 24 for resnet38]")
@click.option("--focal-p", default=3.0, type=click.FloatRange(0),
              help="Focal mask penalty exponent p (nGWP).")
@click.option("--focal-lambda", default=0.01, type=click.FloatRange(0),
              help="Focal mask penalty weight lambda (nGWP).")
@click.option("--sg-psi", default=0.3, type=click.FloatRange(0, 1),
              help="Stochastic gate: probability of dropping the deep features.")
@click.option("--pamr-iters", default=10, type=click.IntRange(1), help="PAMR iterations.")
@click.option("--pamr-dilations", type=FloatList(), default="1,2,4,8,12,24",
              help="PAMR neighbourhood dilations.")
@click.option("--scale-range", type=(float, float), default=(0.9, 1.0), metavar="MIN MAX",
              help="Random rescaling range of the training images.")
@training_options
@click.pass_context
def train_single_stage(ctx: click.Context, **options: Any) -> None:
    """Train the single-stage network (nGWP + focal penalty + PAMR + stochastic gate)
    -> WORKDIR/single_stage/model.pt."""
    click.echo(_run_stage(ctx, options))


@main.command("predict")
@workdir_option
@click.option("--data", type=existing_dir, default=None,
              help="Dataset root in the VOC layout (with --split).")
@click.option("--split", default="val", help="Split to predict (with --data).")
@click.option("--images", type=existing_dir, default=None,
              help="A folder of images to predict instead of a dataset split.")
@click.option("--model", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Segmentation or single-stage checkpoint. "
                   "[default: WORKDIR/seg/model.pt, else WORKDIR/single_stage/model.pt]")
@click.option("--scales", type=FloatList(), default="1.0",
              help="Inference scales whose softmax outputs are averaged, e.g. 0.5,0.75,1.0,1.25.")
@click.option("--flip/--no-flip", default=True, help="Add the mirrored image at every scale.")
@click.option("--crf/--no-crf", default=True,
              help="Dense CRF on the predicted probabilities, as DeepLab's inference ends.")
@crf_iters_option
@click.option("--out", default=None,
              help="Output folder under WORKDIR. [default: pred/<split or images folder name>]")
@amp_option
@workers_option
@jobs_option
@shard_option
@overwrite_option
@click.pass_context
def predict(ctx: click.Context, **options: Any) -> None:
    """A trained segmentation or single-stage model on a split or an image folder
    -> palette PNGs at image size in WORKDIR/pred/<split>/."""
    click.echo(_run_stage(ctx, options))


@main.command("report")
@workdir_option
@click.option("--data", type=existing_dir, default=None,
              help="Dataset root for the images and ground truth. "
                   "[default: the one recorded in WORKDIR/config.toml]")
@click.option("--split", default="train", help="Split whose images are shown.")
@click.option("--samples", default=8, type=click.IntRange(1), help="Images shown side by side.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="HTML file. [default: WORKDIR/report.html]")
@click.pass_context
def report(ctx: click.Context, **options: Any) -> None:
    """One self-contained HTML page: mIoU per stage, per-class IoU, and image / CAM /
    affinity label / pseudo-label / prediction / ground truth side by side."""
    click.echo(_run_stage(ctx, options))


@main.command("demo")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("wsss-demo"), help="Where the toy data and all artifacts go.")
@click.option("--num-train", default=300, type=click.IntRange(16), help="Toy training images.")
@click.option("--num-val", default=100, type=click.IntRange(4), help="Toy validation images.")
@click.option("--epochs", default=None, type=click.IntRange(1),
              help="Epochs of each training stage (fewer for a quicker, rougher run). "
                   "[default: each stage's tiny preset]")
@click.option("--workers", default=2, type=click.IntRange(0), help="DataLoader workers.")
@click.option("--jobs", default=2, type=click.IntRange(1), help="CPU processes for the CRF.")
@click.pass_context
def demo(ctx: click.Context, **options: Any) -> None:
    """Run the whole pipeline on the built-in toy data (CPU, a few minutes) and print mIoU
    after each stage."""
    _run_stage(ctx, options)
