"""A folder of images with a CSV of their labels (docs/datasets.md#csv).

```
DATA/labels.csv          image,labels   e.g.  photos/cat1.jpg,cat;dog
DATA/<image files>       paths relative to DATA, as the CSV names them
DATA/classes.txt         optional: the classes, background first (fixes the indices)
DATA/masks/<id>.png      optional: ground truth, class indices
DATA/splits/<name>.txt   optional: ids per split; without it, split train = every row
```
An image's id is its file name's stem; labels are class names separated by ``;`` or
``|`` (empty: background only; ``background`` itself is skipped). Without
``classes.txt`` the classes are the CSV's names in alphabetical order after background.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from wsss_cli.data.dataset import IMAGE_SUFFIXES, SAFE_ID, LabelledDataset, read_class_names, read_split_file
from wsss_cli.errors import WsssError

CSV_NAME = "labels.csv"
_SEPARATORS = re.compile(r"[;|]")


def split_names(field: str) -> list[str]:
    """``"cat; dog|bird"`` -> ``["cat", "dog", "bird"]`` (background dropped)."""
    names = [n.strip() for n in _SEPARATORS.split(field or "")]
    return [n for n in names if n and n != "background"]


Rows = dict[str, tuple[str, list[str]]]  # id -> (image path relative to the folder, class names)


def read_rows(root: Path, classes: tuple[str, ...] | None) -> tuple[Rows, list[str]]:
    """The CSV's rows as ``{id: (image path, [names])}`` and one line per bad row (unknown
    class when ``classes`` is given, missing image, duplicate or unsafe id, no image)."""
    path = root / CSV_NAME
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if not {"image", "labels"} <= set(reader.fieldnames or ()):
                raise WsssError(f"{path}: needs a header 'image,labels' (has {reader.fieldnames})")
            raw = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise WsssError(f"{path}: not a readable CSV ({e})") from None
    rows: Rows = {}
    problems = []
    for line, row in raw:
        image = (row.get("image") or "").strip()
        where = f"{path}:{line}"
        if not image:
            problems.append(f"{where}: no image named")
            continue
        image_id = Path(image).stem
        names = split_names(row.get("labels") or "")
        unknown = [n for n in names if classes is not None and n not in classes]
        if not SAFE_ID.match(image_id) or Path(image).is_absolute() or ".." in Path(image).parts:
            problems.append(f"{where}: {image!r} is not a plain path inside {root}")
        elif image_id in rows:
            problems.append(f"{where}: duplicate id {image_id!r} (also {rows[image_id][0]})")
        elif Path(image).suffix not in IMAGE_SUFFIXES:
            problems.append(f"{where}: {image!r} is not one of {', '.join(IMAGE_SUFFIXES[:5])}")
        elif not (root / image).is_file():
            problems.append(f"{where}: image {root / image} not found")
        elif unknown:
            problems.append(f"{where}: unknown class {unknown[0]!r} (classes.txt has "
                            f"{', '.join(classes[1:])})")
        else:
            rows[image_id] = (image, names)
    return rows, problems


class CsvDataset(LabelledDataset):
    """A folder of images and ``labels.csv``; every bad row stops it with a one-line error."""

    layout = "csv"

    def __init__(self, root: Path, strict: bool = True):
        self.root = Path(root)
        classes_file = self.root / "classes.txt"
        given = read_class_names(classes_file) if classes_file.exists() else None
        self._rows, self._bad_rows = read_rows(self.root, given)
        if self._bad_rows and strict:
            more = len(self._bad_rows) - 1
            raise WsssError(self._bad_rows[0] + (f" (and {more} more bad rows; wsss import-dataset "
                                                 "lists them)" if more else ""))
        if not self._rows:
            raise WsssError(f"{self.root / CSV_NAME}: no images")
        found = sorted({n for _, names in self._rows.values() for n in names})
        self.classes = given or ("background", *found)
        if len(self.classes) < 2:
            raise WsssError(f"{self.root / CSV_NAME}: no class names in the labels column")

    def splits(self) -> list[str]:
        folder = self.root / "splits"
        return sorted(p.stem for p in folder.glob("*.txt")) if folder.is_dir() else ["train"]

    def listed_ids(self, split: str) -> list[str]:
        path = self.root / "splits" / f"{split}.txt"
        if path.exists():
            return read_split_file(path)
        if split == "train" and not (self.root / "splits").is_dir():
            return list(self._rows)
        raise WsssError(f"--split {split}: {path} not found")

    def problems(self, split: str) -> list[str]:
        return self._bad_rows + super().problems(split)

    def image_path(self, image_id: str) -> Path:
        if image_id not in self._rows:
            raise WsssError(f"image {image_id!r}: not in {self.root / CSV_NAME}")
        return self.root / self._rows[image_id][0]

    def mask_path(self, image_id: str) -> Path | None:
        path = self.root / "masks" / f"{image_id}.png"
        return path if path.exists() else None

    def labels(self, image_id: str) -> list[int]:
        self.image_path(image_id)
        return self._class_indices(self._rows[image_id][1], self.root / CSV_NAME, image_id)
