"""make-pseudo: dump-cams -> make-aff-labels -> train-aff -> random-walk in one go.

Each stage is skipped when its outputs are complete and were made with the same
settings (and the same inputs), so rerunning after a crash or a change redoes only
what is stale.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from wsss_cli.stages import dump_cams, make_aff_labels, random_walk, train_aff


@dataclass(frozen=True)
class MakePseudoConfig:
    dump_cams: dump_cams.DumpCamsConfig
    make_aff_labels: make_aff_labels.MakeAffLabelsConfig
    train_aff: train_aff.TrainAffConfig
    random_walk: random_walk.RandomWalkConfig


def run(cfg: MakePseudoConfig) -> Path:
    """Run the four stages; returns the pseudo-label folder."""
    dump_cams.run(cfg.dump_cams)
    make_aff_labels.run(cfg.make_aff_labels)
    train_aff.run(cfg.train_aff)
    return random_walk.run(cfg.random_walk)
