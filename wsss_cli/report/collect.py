"""What the report shows, read from a workdir into plain dataclasses (no HTML here).

The stages recorded in ``state.json``, every evaluation with an mIoU
(``WORKDIR/eval/*.json`` and ``WORKDIR/pred/*/eval.json``) with its per-class IoU and
threshold sweep, and for a few images of a split the image, CAM, affinity label,
pseudo-label, prediction and ground truth as data URIs. A missing or unreadable
artifact becomes a placeholder picture, never an error: the report is most useful
exactly when a run is half done.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from wsss_cli.data.dataset import VocDataset
from wsss_cli.data.io import read_mask, voc_palette
from wsss_cli.errors import WsssError
from wsss_cli.workdir import ArtifactSet, Layout, Workdir, read_cams

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

THUMB = 240  # long side of the embedded pictures, in pixels: keeps the page small
STAGE_ORDER = ("train-cls", "dump-cams", "eval-cams", "make-aff-labels", "train-aff",
               "random-walk", "make-pseudo", "train-seg", "predict", "eval")
# evaluation file stems: (pattern, rank in the pipeline, label with {split})
EVAL_NAMES = (
    (r"cams_(?P<split>.+)", 0, "CAM ({split}{threshold})"),
    (r"pseudo_nocrf_(?P<split>.+)", 2, "random walk, no CRF ({split})"),
    (r"pseudo_(?P<split>.+)", 3, "pseudo-labels ({split})"),
    (r"(?:seg|pred)_(?P<split>.+)", 4, "segmentation net ({split})"),
)
PRED_EVAL = "eval.json"  # what `wsss eval` writes next to a prediction set by default
IGNORE_COLOUR = (255, 255, 255)  # label 255 (unsure / ignored) is drawn white


@dataclass
class Evaluation:
    """One mIoU result shown on the page."""

    key: str  # where it came from, e.g. ``eval/cams_train.json``
    label: str
    miou: float
    per_class: dict[str, float | None]
    rank: tuple = ()
    images: int | None = None
    sweep: dict[str, float] = field(default_factory=dict)
    best_threshold: float | None = None


@dataclass
class Picture:
    """One cell of a sample row: an encoded picture or a placeholder."""

    caption: str
    uri: str | None = None  # data URI; None = missing
    note: str = "missing"
    size: tuple[int, int] | None = None  # (width, height) of the picture
    labels: bool = False  # a label map: drawn with sharp pixels


@dataclass
class Sample:
    """The pictures of one image, side by side."""

    image_id: str
    pictures: list[Picture]

    @property
    def aspect(self) -> tuple[int, int]:
        """(width, height) of the row's first picture: placeholders take the same shape."""
        return next((p.size for p in self.pictures if p.size is not None), (1, 1))


@dataclass
class StageEntry:
    """One stage run of ``state.json``."""

    name: str
    status: str
    seconds: float | None
    done: Any = None  # images (or items) done, when recorded
    total: Any = None  # out of, when recorded
    updated: str = ""


@dataclass
class LabelClass:
    """A class and its colour in the label maps."""

    name: str
    rgb: tuple[int, int, int]


@dataclass
class ReportData:
    """Everything the page shows."""

    workdir: Path  # resolved
    dataset: Path | None  # resolved; None = no dataset found
    split: str
    generated: str
    stages: list[StageEntry]
    evaluations: list[Evaluation]
    classes: list[LabelClass]
    samples: list[Sample]
    sample_pool: int  # how many ids the samples were chosen from

    @property
    def stage_seconds(self) -> float:
        return sum(s.seconds for s in self.stages if s.seconds is not None)


def collect(workdir: Path, data: Path | None = None, split: str = "train", samples: int = 8,
            progress: Callable[[Iterable[str], str], Iterable[str]] | None = None) -> ReportData:
    """Read ``workdir`` (and the dataset, see :func:`resolve_data`) into a :class:`ReportData`."""
    workdir = Path(workdir)
    state = read_state(workdir)
    dataset = resolve_data(data, workdir)
    evals = collect_evaluations(workdir)
    names = class_names(dataset, evals)
    ids, pool_size = choose_samples(workdir, dataset, split, samples)
    if progress is not None:
        ids = progress(ids, "report")
    rows = [Sample(i, sample_row(workdir, dataset, split, i, names)) for i in ids]
    return ReportData(
        workdir=workdir.resolve(), dataset=dataset.root.resolve() if dataset else None, split=split,
        generated=time.strftime("%Y-%m-%d %H:%M:%S"), stages=stage_entries(state), evaluations=evals,
        classes=label_classes(names), samples=rows, sample_pool=pool_size)


# ---------------------------------------------------------------- state, dataset, evaluations


def read_state(workdir: Path) -> dict[str, Any]:
    if not (workdir / "state.json").is_file():
        raise WsssError(f"--workdir {workdir}: not a wsss workdir (no state.json)")
    return Workdir(workdir).state()


def stage_entries(state: dict[str, Any]) -> list[StageEntry]:
    """The stage runs of ``state.json`` in pipeline order (``stage:output`` after ``stage``)."""
    entries = []
    for name in sorted(state, key=_stage_rank):
        entry = state[name] if isinstance(state[name], dict) else {}
        seconds = entry.get("seconds")
        entries.append(StageEntry(
            name, str(entry.get("status", "?")),
            float(seconds) if isinstance(seconds, (int, float)) else None,
            entry.get("count", entry.get("images")), entry.get("total"),
            str(entry.get("updated", "")).replace("T", " ")))
    return entries


def _stage_rank(name: str) -> tuple[int, str]:
    base = name.split(":")[0]
    return (STAGE_ORDER.index(base) if base in STAGE_ORDER else len(STAGE_ORDER), name)


def resolve_data(data: Path | None, workdir: Path) -> VocDataset | None:
    """``data`` (``--data``), else the first existing ``data`` of config.toml, else ``WORKDIR/data``.

    An explicit ``--data`` must be a dataset; a guessed one that is not is ignored,
    because the report is still useful without pictures of the images.
    """
    if data is not None:
        return VocDataset(Path(data))
    for candidate in [*_config_data_paths(workdir), workdir / "data"]:
        if candidate.is_dir():
            try:
                return VocDataset(candidate)
            except WsssError:
                continue
    return None


def _config_data_paths(workdir: Path) -> list[Path]:
    try:
        config = tomllib.loads(Layout(workdir).config.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return []
    return [Path(section["data"]) for section in config.values()
            if isinstance(section, dict) and isinstance(section.get("data"), str)]


def _load_json(path: Path) -> dict | None:
    try:
        obj = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def collect_evaluations(workdir: Path) -> list[Evaluation]:
    """Every result with an ``miou`` in ``eval/*.json`` and ``pred/*/eval.json``, in pipeline order."""
    layout = Layout(workdir)
    eval_folder = layout.eval("_").parent
    pred_folder = layout.predictions("_").folder.parent
    found: list[Evaluation] = []
    for path in sorted(eval_folder.glob("*.json")):
        found += _evaluations_of(path.stem, _key(path, workdir), _load_json(path))
    for path in sorted(pred_folder.glob(f"*/{PRED_EVAL}")):
        found += _evaluations_of(f"pred_{path.parent.name}", _key(path, workdir), _load_json(path))
    return sorted(found, key=lambda e: e.rank)


def _key(path: Path, workdir: Path) -> str:
    return path.relative_to(workdir).as_posix()


def _evaluations_of(stem: str, key: str, obj: dict | None) -> list[Evaluation]:
    # summaries such as demo.json have no numeric top-level miou: their numbers are in the others
    if not obj or not isinstance(obj.get("miou"), (int, float)):
        return []
    label, rank, split = stem, 5, ""
    for pattern, pattern_rank, template in EVAL_NAMES:
        match = re.fullmatch(pattern, stem)
        if match:
            split, rank = match["split"], pattern_rank
            threshold = obj.get("best_threshold")
            threshold = f", threshold {threshold:.2f}" if isinstance(threshold, (int, float)) else ""
            label = template.format(split=split, threshold=threshold)
            break
    main = Evaluation(key, label, float(obj["miou"]), dict(obj.get("per_class") or {}),
                      (rank, split != "train", split, stem), obj.get("images"),
                      dict(obj.get("sweep") or {}), obj.get("best_threshold"))
    crf = obj.get("crf")
    if not isinstance(crf, dict) or not isinstance(crf.get("miou"), (int, float)):
        return [main]
    # CAM + CRF sits between the CAMs and the random walk in the pipeline
    crf_eval = Evaluation(f"{key} (crf)", f"CAM + CRF ({split or stem})", float(crf["miou"]),
                          dict(crf.get("per_class") or {}), (1, *main.rank[1:]), obj.get("images"))
    return [main, crf_eval]


def class_names(data: VocDataset | None, evals: list[Evaluation]) -> tuple[str, ...]:
    """The dataset's classes, else those of an evaluation (its per-class IoU is written in
    class order, background first)."""
    if data is not None:
        return tuple(data.classes)
    for ev in evals:
        if ev.per_class:
            return tuple(ev.per_class)
    return ("background",)


def label_classes(names: Sequence[str]) -> list[LabelClass]:
    """Each class with the colour it has in the label maps (its index in the palette)."""
    palette = colour_labels(np.arange(min(len(names), 256), dtype=np.uint8))
    return [LabelClass(n, tuple(int(c) for c in palette[i])) for i, n in enumerate(names[:256])]


# ---------------------------------------------------------------- choosing and drawing samples


def artifact_sets(workdir: Path, split: str) -> dict[str, ArtifactSet]:
    """The per-image artifacts a sample row shows, in the default sets of the layout."""
    layout = Layout(workdir)
    return {
        "cam": layout.cams(),
        "aff": layout.labels(Layout.AFF_LABELS),
        "pseudo": layout.labels(Layout.PSEUDO),
        "pred": layout.predictions(split),
    }


def choose_samples(workdir: Path, data: VocDataset | None, split: str, n: int) -> tuple[list[str], int]:
    """``n`` ids evenly spaced over the sorted ids with the most artifacts, and how many such ids.

    Deterministic, so that two reports of one workdir show the same images. Without a
    dataset the candidates are the ids that have any artifact.
    """
    sets = artifact_sets(workdir, split)
    if data is not None:
        ids = data.ids(split)
    else:
        ids = sorted({p.name[: -len(s.suffix)] for s in sets.values() for p in s.folder.glob(f"*{s.suffix}")})
    if not ids:
        return [], 0

    def count(image_id: str) -> int:
        have = sum(s.path(image_id).exists() for s in sets.values())
        return have + (data is not None and data.mask_path(image_id) is not None)

    counts = {i: count(i) for i in ids}
    # take the best-equipped ids, then the next level, until there are n candidates
    pool: list[str] = []
    for level in sorted(set(counts.values()), reverse=True):
        pool += [i for i in ids if counts[i] == level]
        if len(pool) >= n:
            break
    pool.sort()
    picks = np.linspace(0, len(pool) - 1, min(n, len(pool))).round().astype(int)
    return [pool[i] for i in dict.fromkeys(picks.tolist())], len(pool)


def sample_row(workdir: Path, data: VocDataset | None, split: str, image_id: str,
               names: Sequence[str]) -> list[Picture]:
    """The six pictures of one image; each failure only turns its own cell into a placeholder."""
    paths = {key: s.path(image_id) for key, s in artifact_sets(workdir, split).items()}
    image = _try(lambda: data.read_image(image_id)) if data is not None else None
    pictures = [Picture("image") if image is None else
                _picture(f"image {image.shape[1]}×{image.shape[0]}", thumbnail(image), "jpeg")]
    cams = _try(lambda: read_cams(paths["cam"])) if paths["cam"].exists() else None
    if cams is None:
        pictures.append(Picture("CAM", note=_note(paths["cam"])))
    else:
        heat = thumbnail(cam_heatmap(cams[1], image))
        pictures.append(_picture(f"CAM: {_names(cams[0].tolist(), names) or 'no class'}", heat, "jpeg"))
    gt_path = data.mask_path(image_id) if data is not None else None
    for caption, path in (("affinity label", paths["aff"]), ("pseudo-label", paths["pseudo"]),
                          ("prediction", paths["pred"]), ("ground truth", gt_path)):
        pictures.append(_label_picture(caption, path, names))
    return pictures


def _label_picture(caption: str, path: Path | None, names: Sequence[str]) -> Picture:
    mask = _try(lambda: read_mask(path)) if path is not None and path.exists() else None
    if mask is None:
        return Picture(caption, note=_note(path))
    present = [int(c) for c in np.unique(mask) if 0 < c < 255]
    text = f"{caption}: {_names(present, names)}" if present else caption
    return _picture(text, thumbnail(colour_labels(mask), nearest=True), "png")


def _names(classes: Sequence[int], names: Sequence[str]) -> str:
    return ", ".join(names[c] if 0 <= c < len(names) else f"class {c}" for c in classes)


def _note(path: Path | None) -> str:
    return "unreadable" if path is not None and path.exists() else "missing"


def _try(load: Any) -> Any:
    """``load()``, or None when the artifact is unreadable (a WsssError from the readers)."""
    try:
        return load()
    except WsssError:
        return None


def _picture(caption: str, rgb: np.ndarray, fmt: str) -> Picture:
    """A thumbnail of RGB uint8 ``rgb`` as a base64 PNG (a label map) or JPEG data URI."""
    return Picture(caption, data_uri(rgb, fmt), size=(rgb.shape[1], rgb.shape[0]), labels=fmt == "png")


def data_uri(rgb: np.ndarray, fmt: str) -> str:
    params = [cv2.IMWRITE_JPEG_QUALITY, 85] if fmt == "jpeg" else [cv2.IMWRITE_PNG_COMPRESSION, 9]
    ok, buf = cv2.imencode(f".{'jpg' if fmt == 'jpeg' else 'png'}", rgb[..., ::-1], params)
    if not ok:
        raise ValueError("cv2.imencode failed")
    return f"data:image/{fmt};base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def thumbnail(array: np.ndarray, nearest: bool = False) -> np.ndarray:
    """Shrink so that the long side is at most THUMB; label maps keep exact values."""
    h, w = array.shape[:2]
    scale = THUMB / max(h, w)
    if scale >= 1:
        return array
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(array, size, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


def colour_labels(mask: np.ndarray) -> np.ndarray:
    palette = voc_palette()
    palette[255] = IGNORE_COLOUR
    return palette[mask]


def cam_heatmap(cams: np.ndarray, image: np.ndarray | None) -> np.ndarray:
    """Max over classes as a JET colour map, half-blended over the image when there is one."""
    peak = cams.max(axis=0) if len(cams) else np.zeros(cams.shape[1:], np.float32)
    peak = np.clip(np.nan_to_num(peak), 0, 1)
    heat = cv2.applyColorMap((peak * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    if image is None:
        return heat
    if heat.shape[:2] != image.shape[:2]:
        heat = cv2.resize(heat, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    return cv2.addWeighted(image, 0.5, heat, 0.5, 0)
