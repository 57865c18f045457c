"""MS COCO as a dataset (docs/datasets.md#coco).

```
DATA/train2014/<file_name>                 (one folder per split)
DATA/val2014/<file_name>
DATA/annotations/instances_train2014.json  (instances_<split>.json)
```
Split ``S`` reads ``annotations/instances_S.json`` and the images in ``S/``; ``train``
and ``val`` also find ``train2014`` and ``val2014``. An image's id is its file name's
stem. Classes: background 0, then the categories in id order (1..80 for COCO). An
image's labels are the categories of its annotations, crowd ones included (the object
is in the photo).

Masks are rendered with pycocotools the first time they are read and kept in a cache
(``$WSSS_CACHE``, else ``~/.cache/wsss``; one folder per annotation file, named by its
path, size and time): crowd regions are 255 (ignored), then the instances are painted
largest first, so where two overlap the smaller one wins and crowd is ignored only where
no instance lies. Each mask is written atomically, so a killed run resumes.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from wsss_cli.data.dataset import LabelledDataset
from wsss_cli.data.io import write_palette_png
from wsss_cli.errors import WsssError
from wsss_cli.workdir import atomic_path, write_json

SPLIT_ALIASES = {"train": "train2014", "val": "val2014"}
INDEX_VERSION = 1


def is_coco(root: Path) -> bool:
    return any((Path(root) / "annotations").glob("instances_*.json"))


def cache_root() -> Path:
    """Where datasets keep what they derive (COCO's masks): ``$WSSS_CACHE``, else
    ``$XDG_CACHE_HOME/wsss``, else ``~/.cache/wsss``."""
    if os.environ.get("WSSS_CACHE"):
        return Path(os.environ["WSSS_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "wsss"


class CocoDataset(LabelledDataset):
    """A COCO root: images per split folder, instance annotations per split."""

    layout = "coco"

    def __init__(self, root: Path, strict: bool = True):
        self.root, self.strict = Path(root), strict
        if not is_coco(self.root):
            raise WsssError(f"{self.root}: no annotations/instances_<split>.json (expected COCO)")
        files = sorted((self.root / "annotations").glob("instances_*.json"))
        self._annotation_files = {p.stem.removeprefix("instances_"): p for p in files}
        self.classes = ("background", *self._index(next(iter(self._annotation_files)))["categories"])
        self._split_of: dict[str, str] = {}

    def _split_name(self, split: str) -> str:
        for name in (split, SPLIT_ALIASES.get(split)):
            if name in self._annotation_files:
                return name
        raise WsssError(f"--split {split}: no {self.root}/annotations/instances_{split}.json "
                        f"(splits: {', '.join(self._annotation_files)})")

    @functools.cache  # noqa: B019 - one index per split and dataset object
    def _index(self, name: str) -> dict[str, Any]:
        """``{"categories": [names], "images": {id: [file, height, width, labels]}}`` of one
        annotation file, read from the cache, else built from the JSON and cached."""
        path = self._cache(name) / "index.json"
        if path.exists():
            index = json.loads(path.read_text())
            if index.get("version") == INDEX_VERSION:
                return index
        coco = self._annotations(name)
        position = category_positions(coco["categories"])
        names = {c["id"]: c["name"] for c in coco["categories"]}
        labels: dict[int, set[int]] = {}
        problems = []
        for ann in coco["annotations"]:
            if ann.get("category_id") not in position:
                problems.append(f"{self._annotation_files[name]}: annotation {ann.get('id')}: "
                                f"unknown category_id {ann.get('category_id')!r}")
                continue
            labels.setdefault(ann["image_id"], set()).add(position[ann["category_id"]])
        images: dict[str, list] = {}
        for image in coco["images"]:
            image_id = Path(image["file_name"]).stem
            if image_id in images:
                problems.append(f"{self._annotation_files[name]}: image {image['id']}: duplicate "
                                f"id {image_id!r} (file names must differ in more than their folder)")
                continue
            images[image_id] = [image["file_name"], image["height"], image["width"],
                                sorted(labels.get(image["id"], ()))]
        index = {"version": INDEX_VERSION, "categories": [names[c] for c in position], "images": images,
                 "problems": problems}
        write_json(path, index)
        return index

    @functools.cache  # noqa: B019 - the annotation file is read once per process
    def _annotations(self, name: str) -> dict[str, Any]:
        path = self._annotation_files[name]
        try:
            coco = json.loads(path.read_text())
            for key in ("images", "annotations", "categories"):
                coco[key] = list(coco[key])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise WsssError(f"{path}: not a COCO instances file ({e})") from None
        return coco

    @functools.cache  # noqa: B019 - one stat and hash per split, not one per mask
    def _cache(self, name: str) -> Path:
        path = self._annotation_files[name].resolve()
        stat = path.stat()
        key = hashlib.sha1(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
        return cache_root() / "coco" / f"{name}-{key}"

    def _entry(self, image_id: str) -> tuple[str, list]:
        split = self._split_of.get(image_id)
        if split is None:
            for name in self._annotation_files:
                if image_id in self._index(name)["images"]:
                    split = self._split_of.setdefault(image_id, name)
                    break
            else:
                raise WsssError(f"image {image_id!r}: not in any {self.root}/annotations/instances_*.json")
        return split, self._index(split)["images"][image_id]

    def splits(self) -> list[str]:
        aliases = {year: short for short, year in SPLIT_ALIASES.items()}
        return [aliases.get(name, name) for name in self._annotation_files]

    def listed_ids(self, split: str) -> list[str]:
        name = self._split_name(split)
        index = self._index(name)
        if index["problems"] and self.strict:
            more = len(index["problems"]) - 1
            raise WsssError(index["problems"][0] + (f" (and {more} more; wsss import-dataset "
                                                    "lists them)" if more else ""))
        for image_id in index["images"]:
            self._split_of[image_id] = name
        return list(index["images"])

    def problems(self, split: str) -> list[str]:
        return self._index(self._split_name(split))["problems"] + super().problems(split)

    def image_path(self, image_id: str) -> Path:
        split, entry = self._entry(image_id)
        path = self.root / split / entry[0]
        if not path.exists():
            raise WsssError(f"{path}: image not found")
        return path

    def labels(self, image_id: str) -> list[int]:
        return list(self._entry(image_id)[1][3])

    def has_mask(self, image_id: str) -> bool:
        self._entry(image_id)
        return True  # every annotated image has one, all background where nothing is

    def mask_path(self, image_id: str) -> Path | None:
        split, (_, height, width, _) = self._entry(image_id)
        path = self._cache(split) / "masks" / f"{image_id}.png"
        if not path.exists():
            mask = render_mask(self._image_annotations(split).get(image_id, []), height, width,
                               category_positions(self._annotations(split)["categories"]))
            with atomic_path(path) as tmp:
                write_palette_png(tmp, mask)
        return path

    @functools.cache  # noqa: B019 - grouped once per split and dataset object
    def _image_annotations(self, name: str) -> dict[str, list[dict]]:
        coco = self._annotations(name)
        stem = {image["id"]: Path(image["file_name"]).stem for image in coco["images"]}
        grouped: dict[str, list[dict]] = {}
        for ann in coco["annotations"]:
            grouped.setdefault(stem[ann["image_id"]], []).append(ann)
        return grouped



def category_positions(categories: list[dict]) -> dict[int, int]:
    """COCO category id -> class index: 1, 2, ... in id order (background is 0)."""
    return {cat: n + 1 for n, cat in enumerate(sorted(c["id"] for c in categories))}


def render_mask(annotations: list[dict], height: int, width: int,
                position: dict[int, int]) -> np.ndarray:
    """uint8 ``[height, width]`` class map of one image's instance annotations (polygons,
    RLE or uncompressed RLE): 0 background, crowd 255, instances largest first so the
    smaller wins an overlap; ``position`` maps category id -> class index."""
    from pycocotools import mask as coco_mask

    out = np.zeros((height, width), np.uint8)
    crowd = [a for a in annotations if a.get("iscrowd")]
    instances = sorted((a for a in annotations if not a.get("iscrowd") and a.get("category_id") in position),
                       key=lambda a: a.get("area", 0), reverse=True)
    for value, group in ((None, crowd), (0, instances)):
        for ann in group:
            segmentation = ann["segmentation"]
            if isinstance(segmentation, list):
                rles = coco_mask.frPyObjects(segmentation, height, width)
                rle = coco_mask.merge(rles) if rles else None
            elif isinstance(segmentation.get("counts"), list):
                rle = coco_mask.frPyObjects(segmentation, height, width)
            else:
                rle = segmentation
            if rle is None:
                continue
            pixels = coco_mask.decode(rle).astype(bool)
            out[pixels] = 255 if value is None else position[ann["category_id"]]
    return out
