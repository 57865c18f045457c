"""make-pseudo: dump-cams -> make-aff-labels -> train-aff -> random-walk in one go
(``--method ial``: dump-cams -> make-aff-labels -> IAL's rounds, ``workflows.ial``).

Each stage is skipped when its outputs are complete and were made with the same
settings (and the same inputs), so rerunning after a crash or a change redoes only
what is stale. The stages are wired by their sets: the CAM set of dump-cams is the one
make-aff-labels and random-walk read, the affinity-label set the one train-aff learns.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from wsss_cli.stages import dump_cams, make_aff_labels, random_walk, train_aff, train_seg
from wsss_cli.workflows import ial

STAGES = ("dump-cams", "make-aff-labels", "train-aff", "random-walk")
# options of a stage that make-pseudo sets itself (the wiring above), not from the user
WIRED = {"dump-cams": ("out",), "make-aff-labels": ("out",), "train-aff": ("out",),
         "train-seg": ("out", "labels", "pseudo", "resume", "val_split", "val_every")}
# options a stage takes from its [section] of --config only: make-pseudo's own --method
# picks psa or ial, dump-cams's (a CAM reader) is set in [dump-cams]
SECTION_ONLY = {"dump-cams": ("method",)}
# the options of make-pseudo that also reach IAL's unary network (train-seg's others come
# from the [train-seg] section of --config)
UNARY_SHARED = ("data", "workdir", "split", "workers", "amp", "overwrite", "pretrained")


@dataclass(frozen=True)
class MakePseudoConfig:
    dump_cams: dump_cams.DumpCamsConfig
    make_aff_labels: make_aff_labels.MakeAffLabelsConfig
    train_aff: train_aff.TrainAffConfig
    random_walk: random_walk.RandomWalkConfig
    method: ial.IalConfig = field(default_factory=ial.IalConfig)  # make-pseudo's own options
    unary: train_seg.TrainSegConfig | None = None  # IAL's unary network; None = train-seg's defaults

    def wired(self) -> MakePseudoConfig:
        """The sets connected: random-walk's CAM set and train-aff's label set decide."""
        cams, labels = self.random_walk.cams, self.train_aff.aff_labels
        return replace(self, dump_cams=replace(self.dump_cams, out=cams),
                       make_aff_labels=replace(self.make_aff_labels, cams=cams, out=labels))


def run(cfg: MakePseudoConfig) -> Path:
    """Run the four stages (or IAL's); returns the pseudo-label folder."""
    cfg = cfg.wired()
    if cfg.method.method == "ial":
        seeds = cfg.make_aff_labels
        unary = cfg.unary or train_seg.TrainSegConfig(
            **{f.name: getattr(seeds, f.name) for f in fields(seeds)
               if f.name in ("data", "workdir", "split", "overwrite", "runtime")})
        walk = cfg.random_walk
        return ial.run(cfg.method, cfg.dump_cams, seeds, unary, walk.out, walk.crf, walk.jobs)
    dump_cams.run(cfg.dump_cams)
    make_aff_labels.run(cfg.make_aff_labels)
    train_aff.run(cfg.train_aff)
    return random_walk.run(cfg.random_walk)
