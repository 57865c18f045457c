"""The ``wsss`` command line, generated from the stages' config dataclasses.

Each command is a module with a frozen config dataclass and ``run(cfg)``; its options,
defaults and help come from the dataclass's fields (``wsss_cli.options``), so the
command line, ``--config`` files, ``wsss demo`` and the tests see the same defaults.
"""

from __future__ import annotations

import copy
import importlib
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, Field
from pathlib import Path
from typing import Any

import click

from wsss_cli import __version__
from wsss_cli.config import GLOBAL_OPTIONS, default_map
from wsss_cli.errors import WsssError, user_message
from wsss_cli.options import cli_fields
from wsss_cli.runtime import Runtime

CONTEXT = {"show_default": True, "help_option_names": ["-h", "--help"], "max_content_width": 100}

# command -> (module with a config class and run(cfg), config class, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "toy-data": ("workflows.toy_data", "ToyDataConfig",
                 "Write the synthetic toy dataset (5 shape classes) to OUT in the VOC layout."),
    "import-dataset": ("workflows.import_dataset", "ImportDatasetConfig",
                       "Write a COCO or labels.csv dataset (or a VOC one) to a new folder in the "
                       "VOC layout; bad rows are listed one per line and nothing is written."),
    "train-cls": ("stages.train_cls", "TrainClsConfig",
                  "Train the multi-label classifier (CAM network) -> WORKDIR/cls/model.pt."),
    "dump-cams": ("stages.dump_cams", "DumpCamsConfig",
                  "Multi-scale + flip CAMs of a split -> WORKDIR/cams/<id>.npz (float16)."),
    "eval-cams": ("stages.eval_cams", "EvalCamsConfig",
                  "mIoU of a CAM set against ground truth, sweeping the background threshold 0-0.95; "
                  "the best threshold and Otsu's (no ground truth needed)."),
    "eval": ("stages.evaluate", "EvalConfig",
             "Per-class IoU and mIoU of predicted PNGs against ground truth (255 = ignore)."),
    "make-aff-labels": ("stages.make_aff_labels", "MakeAffLabelsConfig",
                        "CAMs -> two backgrounds -> dense CRF -> WORKDIR/aff_labels/<id>.png "
                        "(0 background, c class, 255 unsure)."),
    "make-seeds": ("stages.make_seeds", "MakeSeedsConfig",
                   "CAMs (+ saliency) -> SEC's localisation cues -> WORKDIR/seeds/<id>.png "
                   "(0 background, c class, 255 unknown), for train-seg --loss sec."),
    "train-aff": ("stages.train_aff", "TrainAffConfig",
                  "Train AffinityNet on the affinity labels -> WORKDIR/aff/model.pt."),
    "random-walk": ("stages.random_walk", "RandomWalkConfig",
                    "CAMs + AffinityNet -> random walk (+ CRF) -> WORKDIR/pseudo/<id>.png."),
    "make-pseudo": ("workflows.make_pseudo", "MakePseudoConfig",
                    "dump-cams -> make-aff-labels -> train-aff -> random-walk, each stage skipped "
                    "when its outputs are complete and made with the same settings. Takes every "
                    "option of those stages ([dump-cams], [train-aff], ... sections of --config "
                    "work too). --method ial: CAM seeds, then IAL's rounds of unary network "
                    "(train-seg's, [train-seg] section) + pairwise propagation network on mined "
                    "confident regions, each round in WORKDIR/ial/round<k>/."),
    "train-seg": ("stages.train_seg", "TrainSegConfig",
                  "Train the DeepLab-style segmentation network on pseudo-labels -> "
                  "WORKDIR/seg/model.pt."),
    "train-single-stage": ("stages.train_single_stage", "TrainSingleStageConfig",
                           "Train the single-stage network (nGWP + focal penalty + PAMR + "
                           "stochastic gate) -> WORKDIR/single_stage/model.pt."),
    "predict": ("stages.predict", "PredictConfig",
                "A trained segmentation or single-stage model on a split or an image folder -> "
                "palette PNGs at image size in WORKDIR/pred/<split>/."),
    "diagnose": ("stages.diagnose", "DiagnoseConfig",
                 "Where a run loses, link by link, against ground truth: affinity-label precision, "
                 "AffinityNet's pair separation, the walk against its CAMs, the CRF alone."),
    "compare": ("workflows.compare", "CompareConfig",
                "Train several CAM methods (cam, seam, has, acol, erasing, mdc, mixup) on one "
                "dataset, dump their CAMs, score them with one protocol and print one table: "
                "mIoU and foreground precision / recall at the best threshold and at Otsu's, "
                "training time."),
    "report": ("stages.report", "ReportConfig",
               "One self-contained HTML page: mIoU per stage, per-class IoU, and image / CAM / "
               "affinity label / pseudo-label / prediction / ground truth side by side."),
    "demo": ("workflows.demo", "DemoConfig",
             "Run the whole pipeline on the built-in toy data (CPU) and print mIoU after each stage."),
}


class NumberList(click.ParamType):
    """Comma-separated numbers (or a TOML list): ``1.0,0.5,1.5,2.0``; ``kind`` int or float."""

    def __init__(self, kind: type = float):
        self.kind = kind
        self.name = "INTS" if kind is int else "FLOATS"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[Any, ...]:
        items = value if isinstance(value, (list, tuple)) else [
            v for v in str(value).split(",") if v.strip()]
        try:
            return tuple(self._one(v) for v in items)
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of {self.name.lower()}", param, ctx)

    def _one(self, value: Any) -> Any:
        number = float(value)
        if self.kind is int and number != int(number):
            raise ValueError(value)
        return self.kind(number)


class UserError(click.ClickException):
    """A :class:`WsssError` on its way out: ``Error: <message>``, exit code 2."""

    exit_code = 2


class WsssGroup(click.Group):
    """Turns user errors (ours, and a full disk, a missing permission...) into click's
    one-line error and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (WsssError, OSError) as e:
            message = user_message(e)
            if message is None:
                raise
            raise UserError(message) from None


# ------------------------------------------------------------------ options from dataclass fields


def _plain(annotation: Any) -> Any:
    """``X | None`` -> ``X``."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0]
    return annotation


def _click_type(annotation: Any, meta: dict[str, Any]) -> Any:
    kind = _plain(annotation)
    if kind is int and ("min" in meta or "max" in meta):
        return click.IntRange(meta.get("min"), meta.get("max"))
    if kind is float and ("min" in meta or "max" in meta):
        return click.FloatRange(meta.get("min"), meta.get("max"), min_open=meta.get("min_open", False))
    if kind is Path:
        return click.Path(exists=meta.get("exists", False), file_okay=meta.get("file_okay", True),
                          dir_okay=meta.get("dir_okay", True), path_type=Path)
    if kind is str and "choices" in meta:
        return click.Choice(list(meta["choices"]))
    if typing.get_origin(kind) is tuple:
        args = typing.get_args(kind)
        return NumberList(args[0]) if args[-1] is Ellipsis else tuple(args)
    return kind


def _per_backbone(presets: dict[str, dict[str, Any]], name: str) -> str | None:
    """``tiny: 24; resnet38, vgg16: 15; ...``: a preset value by backbone, for ``--help``."""
    from wsss_cli.models.backbones import BACKBONES

    groups: dict[str, list[str]] = {}
    for backbone in BACKBONES.names():
        preset = presets.get(backbone, presets.get(BACKBONES.get(backbone).family, {}))
        if name in preset:
            value = preset[name]
            text = " ".join(map(str, value)) if isinstance(value, tuple) else str(value)
            groups.setdefault(text, []).append(backbone)
    if len(groups) == 1:
        return next(iter(groups))
    return "; ".join(f"{', '.join(names)}: {text}" for text, names in groups.items()) or None


def _parameter(f: Field, annotation: Any, presets: dict[str, dict[str, Any]]) -> Callable:
    """The click option (or argument) of one config field."""
    meta = dict(f.metadata.get("click", {}))
    if str(meta.get("default_text", "")).startswith("per backbone"):
        meta["default_text"] = _per_backbone(presets, f.name) or meta["default_text"]
    kind = _click_type(annotation, meta)
    if meta.get("argument"):
        return click.argument(f.name, type=kind)
    flag = "--" + f.name.replace("_", "-")
    default = None if f.default is MISSING else f.default
    help_text = f.metadata.get("help", "")
    if meta.get("default_text"):
        help_text += f" [default: {meta['default_text']}]"
    kwargs: dict[str, Any] = dict(default=default, help=help_text, metavar=meta.get("metavar"),
                                  required=f.default is MISSING or meta.get("required", False))
    if _plain(annotation) is bool:
        if meta.get("is_flag"):
            return click.option(flag, f.name, is_flag=True, **kwargs)
        return click.option(f"{flag}/--{meta.get('secondary', 'no-' + flag[2:])}", f.name, **kwargs)
    return click.option(flag, f.name, type=kind, **kwargs)


def config_parameters(config: type) -> list[click.Parameter]:
    """The command-line parameters of a config dataclass, in field order."""
    hints = typing.get_type_hints(config)
    command = click.Command("_")
    for f in cli_fields(config):
        _parameter(f, hints[f.name], getattr(config, "PRESETS", {}))(command)
    return command.params


def _target(command: str) -> tuple[types.ModuleType, type]:
    module_name, config_name, _ = COMMANDS[command]
    module = importlib.import_module(f"wsss_cli.{module_name}")
    return module, getattr(module, config_name)


def _run_command(**options: Any) -> None:
    """Build the command's config dataclass from its options and run it."""
    ctx = click.get_current_context()
    module, config = _target(ctx.command.name)
    result = module.run(config(**options, runtime=ctx.obj))
    if isinstance(result, (Path, str)):
        click.echo(result)


# ------------------------------------------------------------------ the group


@click.group(cls=WsssGroup, context_settings=CONTEXT)
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
    ctx.obj.torch_device()  # an unknown or unavailable --device fails here, before any output


def _add_commands() -> None:
    from wsss_cli.workflows.make_pseudo import STAGES

    for name, (_, _, help_text) in COMMANDS.items():
        if name == "make-pseudo":
            continue
        params = config_parameters(_target(name)[1])
        main.add_command(click.Command(name, callback=_run_command, params=params, help=help_text,
                                       context_settings=CONTEXT))
    main.add_command(click.Command("make-pseudo", callback=_make_pseudo, context_settings=CONTEXT,
                                   params=_union_params(STAGES), help=COMMANDS["make-pseudo"][2],
                                   short_help="CAMs -> affinity labels -> AffinityNet -> random walk (or "
                                              "IAL's rounds), cached."))


def _union_params(stages: tuple[str, ...]) -> list[click.Parameter]:
    """The stages' options, each name once, then make-pseudo's own (--method, IAL's); an
    option two stages read with different meanings says what it does in each."""
    from wsss_cli.workflows.ial import IalConfig
    from wsss_cli.workflows.make_pseudo import SECTION_ONLY, WIRED

    params: dict[str, click.Parameter] = {}
    meanings: dict[str, dict[str, str]] = {}  # option -> stage -> its help there
    groups = [(p, stage) for stage in stages for p in main.commands[stage].params]
    for p, stage in groups + [(p, "make-pseudo") for p in config_parameters(IalConfig)]:
        if p.name not in (*WIRED.get(stage, ()), *SECTION_ONLY.get(stage, ())):
            params.setdefault(p.name, p)
            if isinstance(p, click.Option) and p.help not in meanings.setdefault(p.name, {}).values():
                meanings[p.name][stage] = p.help
    for name, helps in meanings.items():
        if len(helps) > 1:
            params[name] = copy.copy(params[name])
            params[name].help = " ".join(f"{stage}: {text}" for stage, text in helps.items())
    return list(params.values())


def _make_pseudo(**options: Any) -> None:
    """Each stage gets its own options; one not given to make-pseudo falls back to the
    stage's [section] of --config, then to the stage's default."""
    from wsss_cli.workflows import make_pseudo
    from wsss_cli.workflows.ial import IalConfig

    ctx = click.get_current_context()
    given = {k: v for k, v in options.items() if ctx.get_parameter_source(k).name != "DEFAULT"}
    configs = {name.replace("-", "_"): _section_config(name, main.commands[name].params,
                                                        _target(name)[1], given)
               for name in make_pseudo.STAGES}
    # only what was given: an option IAL shares with a stage (--crf-power) keeps IAL's default
    configs["method"] = IalConfig(**{k: v for k, v in given.items()
                                     if k in {p.name for p in config_parameters(IalConfig)}})
    if configs["method"].method == "ial":  # the unary network: train-seg's options, shared ones
        shared = {k: v for k, v in given.items() if k in make_pseudo.UNARY_SHARED}
        configs["unary"] = _section_config("train-seg", main.commands["train-seg"].params,
                                           _target("train-seg")[1], shared)
    click.echo(make_pseudo.run(make_pseudo.MakePseudoConfig(**configs)))


def _section_config(name: str, params: list[click.Parameter], config: type,
                    given: dict[str, Any]) -> Any:
    """Stage ``name``'s config from its [section] of --config, overridden by the ``given``
    options it has (minus the ones make-pseudo wires itself)."""
    from wsss_cli.workflows.make_pseudo import SECTION_ONLY, WIRED

    ctx = click.get_current_context()
    by_name = {p.name: p for p in params if p.name not in WIRED.get(name, ())}
    values = {k: by_name[k].type_cast_value(ctx, v)
              for k, v in (ctx.find_root().default_map or {}).get(name, {}).items()
              if k in by_name and v is not None}
    values.update({k: v for k, v in given.items()
                   if k in by_name and k not in SECTION_ONLY.get(name, ())})
    return config(**values, runtime=ctx.obj)


_add_commands()
