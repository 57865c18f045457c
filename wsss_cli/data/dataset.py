"""Datasets: what every stage reads (images, image-level labels, masks), whatever the layout.

``open_dataset(root)`` recognises three layouts (docs/datasets.md):

- PASCAL VOC 2012 (SPEC §3), :class:`VocDataset`:
  ```
  DATA/JPEGImages/<id>.jpg
  DATA/ImageSets/Segmentation/<split>.txt
  DATA/SegmentationClass/<id>.png  (or SegmentationClassAug/)
  DATA/cls_labels.json             {"<id>": [class index or name, ...]}
  DATA/Annotations/<id>.xml
  DATA/classes.txt                 background first
  ```
  Image-level labels come from ``cls_labels.json``, else the XML annotations, else the
  ground-truth masks.
- MS COCO (``annotations/instances_<split>.json``), :class:`wsss_cli.data.coco.CocoDataset`.
- a folder with ``labels.csv``, :class:`wsss_cli.data.csv_folder.CsvDataset`.

Class indices count background as 0, so foreground classes are ``1..num_classes-1``.
"""

from __future__ import annotations

import functools
import json
import re
import xml.etree.ElementTree as ET
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from wsss_cli.data.io import check_image, image_size, read_image, read_mask
from wsss_cli.errors import WsssError

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".JPG", ".JPEG", ".PNG")
SAFE_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


def read_class_names(path: Path) -> tuple[str, ...]:
    """A classes.txt: one name per line, background first, no duplicates."""
    names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    if len(names) < 2:
        raise WsssError(f"{path}: needs background plus at least one class")
    if len(set(names)) != len(names):
        raise WsssError(f"{path}: duplicate class names")
    return names


def read_split_file(path: Path) -> list[str]:
    """The ids of a split file (first word of each line), not empty."""
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise WsssError(f"{path}: empty split")
    return ids


def checked_id(image_id: str, root: Path) -> str:
    if not SAFE_ID.match(image_id):
        raise WsssError(f"image id {image_id!r} is not a plain file name (it could escape {root})")
    return image_id


class LabelledDataset(ABC):
    """Read-only view of a dataset; every failure is a one-line WsssError. A layout sets
    ``root``, ``classes`` (background first) and ``layout`` and provides ``splits``,
    ``listed_ids``, ``image_path``, ``mask_path`` and ``labels``."""

    root: Path
    classes: tuple[str, ...]
    layout: str

    @property
    def num_classes(self) -> int:
        """Number of classes including background."""
        return len(self.classes)

    @abstractmethod
    def splits(self) -> list[str]:
        """The names of the splits the dataset defines."""
        ...

    @abstractmethod
    def listed_ids(self, split: str) -> list[str]:
        """The ids ``split`` lists, unchecked."""
        ...

    def ids(self, split: str) -> list[str]:
        """The image ids of ``split``, checked: safe names, an image for each, not empty."""
        ids = self.listed_ids(split)
        if not ids:
            raise WsssError(f"--split {split}: no images")
        for image_id in ids:
            self.image_path(checked_id(image_id, self.root))
        return ids

    def problems(self, split: str) -> list[str]:
        """One line per image of ``split`` a stage would stop on: an unsafe or duplicate
        id, a missing image, an unknown class."""
        found, seen = [], set()
        for image_id in self.listed_ids(split):
            if image_id in seen:
                found.append(f"--split {split}: duplicate id {image_id!r}")
                continue
            seen.add(image_id)
            try:
                self.image_path(checked_id(image_id, self.root))
                self.labels(image_id)
            except WsssError as e:
                found.append(str(e))
        return found

    @abstractmethod
    def image_path(self, image_id: str) -> Path:
        ...

    @abstractmethod
    def mask_path(self, image_id: str) -> Path | None:
        """The ground-truth PNG of an image, None without one."""
        ...

    @abstractmethod
    def labels(self, image_id: str) -> list[int]:
        """Sorted foreground class indices (1..num_classes-1) present in the image."""
        ...

    def check(self, ids: list[str], progress: Callable[..., Iterable] | None = None) -> None:
        """Check every image of ``ids`` cheaply (:func:`check_image`) and its labels, so a
        broken file or an unknown class name stops a stage before it starts, not hours in."""
        items = progress(ids, "checking images") if progress else ids
        for image_id in items:
            check_image(self.image_path(image_id))
            self.labels(image_id)

    def has_masks(self, ids: list[str]) -> bool:
        return all(self.has_mask(i) for i in ids)

    def has_mask(self, image_id: str) -> bool:
        """Whether the image has ground truth (without rendering it where masks are made)."""
        return self.mask_path(image_id) is not None

    def read_image(self, image_id: str) -> np.ndarray:
        """RGB uint8 ``[H, W, 3]``."""
        return read_image(self.image_path(image_id))

    def read_mask(self, image_id: str, shape: tuple[int, int] | None = None) -> np.ndarray:
        """Ground truth ``[H, W]`` uint8 checked against the class count and the image's
        size (``shape``, else read from the image file's header)."""
        path = self.mask_path(image_id)
        if path is None:
            raise WsssError(f"image {image_id!r}: no ground-truth mask under {self.root}")
        mask = read_mask(path)
        if shape is None:
            shape = image_size(self.image_path(image_id))
        if shape is not None and mask.shape != tuple(shape):
            raise WsssError(f"{path}: mask size {mask.shape[::-1]} differs from its image {shape[::-1]}")
        bad = mask[(mask >= self.num_classes) & (mask != 255)]
        if bad.size:
            raise WsssError(
                f"{path}: class index {int(bad[0])} out of range (dataset has {self.num_classes} classes)"
            )
        return mask

    def label_vector(self, image_id: str) -> np.ndarray:
        """Multi-hot float32 ``[num_classes - 1]`` over the foreground classes."""
        vec = np.zeros(self.num_classes - 1, np.float32)
        vec[[c - 1 for c in self.labels(image_id)]] = 1
        return vec

    def _class_indices(self, entries: list, source: Path, image_id: str) -> list[int]:
        out = set()
        for entry in entries:
            if isinstance(entry, str):
                if entry not in self.classes:
                    raise WsssError(f"{source}: image {image_id!r}: unknown class name {entry!r} "
                                    f"(classes: {', '.join(self.classes[1:])})")
                index = self.classes.index(entry)
            elif isinstance(entry, int) and 0 <= entry < self.num_classes:
                index = entry
            else:
                raise WsssError(f"{source}: image {image_id!r}: class {entry!r} out of range "
                                f"1..{self.num_classes - 1}")
            if index > 0:
                out.add(index)
        return sorted(out)

class VocDataset(LabelledDataset):
    """A dataset folder in the PASCAL VOC 2012 layout."""

    layout = "voc"

    def __init__(self, root: Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise WsssError(f"--data {self.root}: not a folder")
        if not (self.root / "JPEGImages").is_dir():
            raise WsssError(f"{self.root}: no JPEGImages/ folder (expected the VOC layout)")
        classes = self.root / "classes.txt"
        self.classes = read_class_names(classes) if classes.exists() else VOC_CLASSES

    def splits(self) -> list[str]:
        return sorted(p.stem for p in (self.root / "ImageSets" / "Segmentation").glob("*.txt"))

    def listed_ids(self, split: str) -> list[str]:
        path = self.root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not path.exists():
            raise WsssError(f"--split {split}: {path} not found")
        return read_split_file(path)

    def image_path(self, image_id: str) -> Path:
        checked_id(image_id, self.root)
        for suffix in IMAGE_SUFFIXES:
            path = self.root / "JPEGImages" / f"{image_id}{suffix}"
            if path.exists():
                return path
        raise WsssError(f"{self.root / 'JPEGImages' / image_id}.jpg: image not found")

    def mask_path(self, image_id: str) -> Path | None:
        for folder in ("SegmentationClass", "SegmentationClassAug"):
            path = self.root / folder / f"{image_id}.png"
            if path.exists():
                return path
        return None

    def labels(self, image_id: str) -> list[int]:
        table = self._label_table()
        if table is not None:
            if image_id not in table:
                raise WsssError(f"{self.root / 'cls_labels.json'}: no labels for image {image_id!r}")
            return table[image_id]
        xml = self.root / "Annotations" / f"{image_id}.xml"
        if xml.exists():
            return self._labels_from_xml(xml)
        if self.mask_path(image_id) is not None:
            mask = self.read_mask(image_id)
            return [int(c) for c in np.unique(mask) if 0 < c < 255]
        raise WsssError(
            f"image {image_id!r}: no image-level labels (no cls_labels.json, "
            f"Annotations/{image_id}.xml or ground-truth mask)"
        )

    @functools.cache  # noqa: B019 - one table per dataset object, read once
    def _label_table(self) -> dict[str, list[int]] | None:
        path = self.root / "cls_labels.json"
        if not path.exists():
            return None
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise WsssError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(raw, dict):
            raise WsssError(f"{path}: expected an object {{id: [classes]}}")
        return {k: self._class_indices(v, path, k) for k, v in raw.items()}

    def _labels_from_xml(self, path: Path) -> list[int]:
        try:
            root = ET.parse(path).getroot()
        except ET.ParseError as e:
            raise WsssError(f"{path}: not valid XML ({e})") from None
        names = [(obj.findtext("name") or "").strip() for obj in root.iter("object")]
        return self._class_indices(names, path, path.stem)



def open_dataset(root: Path, strict: bool = True) -> LabelledDataset:
    """The dataset at ``root`` in whichever layout it has (VOC, COCO, a folder with
    labels.csv); ``strict=False`` opens a CSV or COCO dataset with bad rows, to list them
    (``problems``)."""
    from wsss_cli.data.coco import CocoDataset, is_coco
    from wsss_cli.data.csv_folder import CSV_NAME, CsvDataset

    root = Path(root)
    if not root.is_dir():
        raise WsssError(f"--data {root}: not a folder")
    if (root / "JPEGImages").is_dir():
        return VocDataset(root)
    if (root / CSV_NAME).is_file():
        return CsvDataset(root, strict)
    if is_coco(root):
        return CocoDataset(root, strict)
    raise WsssError(f"--data {root}: not a dataset (expected JPEGImages/ as VOC, {CSV_NAME}, or "
                    "annotations/instances_<split>.json as COCO; docs/datasets.md)")


class ImageFolder:
    """A plain folder of images (``predict --images``); an image's id is its file name's stem."""

    def __init__(self, root: Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise WsssError(f"--images {self.root}: not a folder")
        self._paths: dict[str, Path] = {}
        for path in sorted(self.root.iterdir()):
            if path.suffix not in IMAGE_SUFFIXES or not path.is_file():
                continue
            if path.stem in self._paths:
                raise WsssError(f"{path}: same name as {self._paths[path.stem].name}; ids must be unique")
            self._paths[path.stem] = path
        if not self._paths:
            raise WsssError(f"--images {self.root}: no images ({', '.join(IMAGE_SUFFIXES[:5])})")

    def ids(self) -> list[str]:
        return list(self._paths)

    def read_image(self, image_id: str) -> np.ndarray:
        """RGB uint8 ``[H, W, 3]``."""
        return read_image(self._paths[image_id])

    def check(self, ids: list[str], progress: Callable[..., Iterable] | None = None) -> None:
        """:func:`check_image` on every image of ``ids``."""
        for image_id in progress(ids, "checking images") if progress else ids:
            check_image(self._paths[image_id])
