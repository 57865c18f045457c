"""import-dataset: any dataset wsss reads (COCO, a folder with labels.csv, VOC) written out
in the VOC layout, for users who prefer files on disk (docs/datasets.md#import-dataset).

Every split is checked first; each bad row (unknown class, missing image, duplicate id)
is reported on its own line and nothing is written. The new folder is built under a
temporary name beside OUT and renamed onto it at the end, so a failed or killed import
leaves nothing half-written.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from wsss_cli.data.dataset import LabelledDataset, open_dataset
from wsss_cli.errors import WsssError
from wsss_cli.options import option
from wsss_cli.runtime import Runtime
from wsss_cli.workdir import link_file, write_bytes, write_json


@dataclass(frozen=True, kw_only=True)
class ImportDatasetConfig:
    data: Path = option(help="Dataset to import: a COCO root, a folder with labels.csv, or VOC.",
                        exists=True, file_okay=False)
    out: Path = option(help="New folder to write in the VOC layout (must not exist).", file_okay=False)
    runtime: Runtime = field(default=Runtime(), metadata={"cli": False})


def run(cfg: ImportDatasetConfig) -> str:
    out = Path(cfg.out)
    if out.exists():
        raise WsssError(f"--out {out}: already exists; choose a new folder")
    data = open_dataset(cfg.data, strict=False)
    splits = data.splits()
    if not splits:
        raise WsssError(f"--data {cfg.data}: defines no split")
    problems = [line for split in splits for line in data.problems(split)]
    problems += _cross_split_duplicates(data, splits)
    if problems:
        for line in dict.fromkeys(problems):
            print(line, file=sys.stderr)
        raise WsssError(f"--data {cfg.data}: {len(problems)} bad rows (listed above); nothing written")
    staging = out.with_name(f".{out.name}.importing")
    shutil.rmtree(staging, ignore_errors=True)  # what a killed import left
    try:
        images = _write_voc(data, splits, staging, cfg.runtime)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return (f"wrote {images} images ({', '.join(splits)}), {data.num_classes - 1} classes from the "
            f"{data.layout} dataset {cfg.data} to {out} (VOC layout)")


def _cross_split_duplicates(data: LabelledDataset, splits: list[str]) -> list[str]:
    """An id listed by two splits with two different images would be one file in VOC."""
    first: dict[str, tuple[str, Path]] = {}
    found = []
    for split in splits:
        for image_id in dict.fromkeys(data.listed_ids(split)):
            try:
                path = data.image_path(image_id)
            except WsssError:
                continue  # already reported by problems()
            if image_id in first and first[image_id][1] != path:
                found.append(f"--split {split}: duplicate id {image_id!r} (also {first[image_id][1]} "
                             f"in split {first[image_id][0]})")
            first.setdefault(image_id, (split, path))
    return found


def _write_voc(data: LabelledDataset, splits: list[str], out: Path, runtime: Runtime) -> int:
    """The VOC folder of ``data``: images linked (copied across file systems), masks where
    the dataset has them, labels, classes, one split file per split; returns the image count."""
    labels: dict[str, list[int]] = {}
    for split in splits:
        ids = data.ids(split)
        for image_id in runtime.progress(ids, f"import {split}"):
            if image_id not in labels:
                source = data.image_path(image_id)
                link_file(source, out / "JPEGImages" / f"{image_id}{source.suffix}")
                mask = data.mask_path(image_id)
                if mask is not None:
                    link_file(mask, out / "SegmentationClass" / f"{image_id}.png")
                labels[image_id] = data.labels(image_id)
        _write_lines(out / "ImageSets" / "Segmentation" / f"{split}.txt", ids)
    _write_lines(out / "classes.txt", data.classes)
    write_json(out / "cls_labels.json", labels)
    return len(labels)


def _write_lines(path: Path, lines: Iterable[str]) -> None:
    write_bytes(path, "".join(f"{line}\n" for line in lines).encode())
