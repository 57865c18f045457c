"""make-pseudo: dump-cams -> make-aff-labels -> train-aff -> random-walk in one go.

Each stage is skipped when its outputs are complete and were made with the same
settings (and the same inputs), so rerunning after a crash or a change redoes only
what is stale. The stages are wired by their sets: the CAM set of dump-cams is the one
make-aff-labels and random-walk read, the affinity-label set the one train-aff learns.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from wsss_cli.stages import dump_cams, make_aff_labels, random_walk, train_aff

STAGES = ("dump-cams", "make-aff-labels", "train-aff", "random-walk")
# options of a stage that make-pseudo sets itself (the wiring above), not from the user
WIRED = {"dump-cams": ("out",), "make-aff-labels": ("out",), "train-aff": ("out",)}


@dataclass(frozen=True)
class MakePseudoConfig:
    dump_cams: dump_cams.DumpCamsConfig
    make_aff_labels: make_aff_labels.MakeAffLabelsConfig
    train_aff: train_aff.TrainAffConfig
    random_walk: random_walk.RandomWalkConfig

    def wired(self) -> MakePseudoConfig:
        """The sets connected: random-walk's CAM set and train-aff's label set decide."""
        cams, labels = self.random_walk.cams, self.train_aff.aff_labels
        return replace(self, dump_cams=replace(self.dump_cams, out=cams),
                       make_aff_labels=replace(self.make_aff_labels, cams=cams, out=labels))


def run(cfg: MakePseudoConfig) -> Path:
    """Run the four stages; returns the pseudo-label folder."""
    cfg = cfg.wired()
    dump_cams.run(cfg.dump_cams)
    make_aff_labels.run(cfg.make_aff_labels)
    train_aff.run(cfg.train_aff)
    return random_walk.run(cfg.random_walk)
