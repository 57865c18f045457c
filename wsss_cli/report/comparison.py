"""The CAM method comparisons of a workdir: every ``WORKDIR/eval/compare_<split>.json``
that ``wsss compare`` wrote, as the table it printed. A file that cannot be read as one
becomes a note on the page, never an error."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsss_cli.report.runinfo import workdir_key
from wsss_cli.workdir import Layout
from wsss_cli.workflows.compare import HEADERS, table_row

STEM = re.compile(r"compare_(?P<split>.+)")


@dataclass
class Comparison:
    """One ``wsss compare`` table."""

    split: str
    key: str  # e.g. ``eval/compare_train.json``
    headers: list[str] = field(default_factory=lambda: list(HEADERS))
    rows: list[list[Any]] = field(default_factory=list)
    note: str = ""


def collect_comparisons(workdir: Path) -> list[Comparison]:
    """Every ``eval/compare_*.json``, in name order."""
    found = []
    for path in sorted(Layout(workdir).eval("_").parent.glob("compare_*.json")):
        match = STEM.fullmatch(path.stem)
        if match:
            found.append(read_comparison(path, match["split"], workdir_key(path, workdir)))
    return found


def read_comparison(path: Path, split: str, key: str) -> Comparison:
    """The table in ``path``; one with only a note when it is not one."""
    try:
        rows = [table_row(r) for r in json.loads(path.read_text())["methods"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return Comparison(split, key, note="unreadable: not a result of wsss compare (run it again)")
    return Comparison(split, key, rows=rows)
