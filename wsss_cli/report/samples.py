"""The sample rows: which images of a split are shown (evenly spaced ones, the worst by
per-image mIoU) or of a ``predict --images`` folder, and which artifacts each row shows
(image, CAM, affinity label, SEC seeds when made, pseudo-label, prediction, ground truth).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wsss_cli.data.augment import resize
from wsss_cli.data.dataset import ImageFolder, LabelledDataset
from wsss_cli.data.overlay import tint
from wsss_cli.errors import WsssError
from wsss_cli.report.pictures import (
    Picture,
    cam_heatmap,
    encoded_picture,
    image_picture,
    label_picture,
    missing_note,
    names_of,
    read_label_map,
    thumbnail,
    try_read,
)
from wsss_cli.workdir import ArtifactSet, Layout, read_cams

FOLDER_LIMIT = 48  # images of an --images folder shown at most (evenly spaced)


@dataclass
class Sample:
    """The pictures of one image, side by side."""

    image_id: str
    pictures: list[Picture]
    note: str = ""  # e.g. the image's mIoU, under its id

    @property
    def aspect(self) -> tuple[int, int]:
        """(width, height) of the row's first picture: placeholders take the same shape."""
        return next((p.size for p in self.pictures if p.size is not None), (1, 1))


@dataclass
class SampleSet:
    """Sample rows of one split (or image folder): evenly spaced ones, then the worst ones."""

    title: str
    note: str  # how the rows were chosen
    samples: list[Sample]
    worst: list[Sample] = field(default_factory=list)
    worst_note: str = ""  # how the worst were ranked; empty when they were not

    @property
    def has_cam(self) -> bool:
        return any(p.caption.startswith("CAM") for s in self.samples for p in s.pictures)


def artifact_sets(workdir: Path, split: str) -> dict[str, ArtifactSet]:
    """The per-image artifacts a sample row shows, in the default sets of the layout."""
    layout = Layout(workdir)
    sets = {
        "cam": layout.cams(),
        "aff": layout.labels(Layout.AFF_LABELS),
        "pseudo": layout.labels(Layout.PSEUDO),
        "pred": layout.predictions(split),
    }
    seeds = layout.labels(Layout.SEEDS)
    if seeds.folder.is_dir():  # SEC's path: no column of placeholders on the others
        sets["seeds"] = seeds
    return sets


def split_samples(workdir: Path, data: LabelledDataset | None, split: str, names: Sequence[str], n: int,
                  worst: int, step: Callable[[Iterable[str], str], Iterable[str]],
                  all_columns: bool = True) -> SampleSet:
    """``n`` evenly spaced rows of ``split`` and its ``worst`` rows by IoU. ``all_columns``:
    keep a column every row lacks (a placeholder says what is missing); else drop it."""
    ids, pool = choose_samples(workdir, data, split, n)
    rows = [Sample(i, sample_row(workdir, data, split, i, names)) for i in step(ids, f"report: {split}")]
    worst_rows: list[Sample] = []
    worst_note = ""
    if worst > 0 and data is not None:
        ranked, worst_note = worst_images(workdir, data, split, worst, step)
        worst_rows = [Sample(i, sample_row(workdir, data, split, i, names), f"mIoU {v:.1f} %")
                      for i, v in ranked]
    if not all_columns:
        _drop_empty_columns([*rows, *worst_rows])
    note = f"Evenly spaced over the {pool} ids with the most artifacts." if rows else ""
    return SampleSet(f"split {split}", note, rows, worst_rows, worst_note)


def choose_samples(workdir: Path, data: LabelledDataset | None, split: str, n: int) -> tuple[list[str], int]:
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
        return have + (data is not None and data.has_mask(image_id))

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


def sample_row(workdir: Path, data: LabelledDataset | None, split: str, image_id: str,
               names: Sequence[str]) -> list[Picture]:
    """The pictures of one image (six, seven with SEC's seeds); each failure only turns its own
    cell into a placeholder."""
    paths = {key: s.path(image_id) for key, s in artifact_sets(workdir, split).items()}
    image = try_read(lambda: data.read_image(image_id)) if data is not None else None
    pictures = [image_picture(image)]
    cams = try_read(lambda: read_cams(paths["cam"])) if paths["cam"].exists() else None
    if cams is None:
        pictures.append(Picture("CAM", note=missing_note(paths["cam"])))
    else:
        heat = thumbnail(cam_heatmap(cams[1], image))
        cam_caption = f"CAM: {names_of(cams[0].tolist(), names) or 'no class'}"
        pictures.append(encoded_picture(cam_caption, heat, "jpeg"))
    gt_path = data.mask_path(image_id) if data is not None else None
    seeds = [("seeds", paths["seeds"])] if "seeds" in paths else []
    for caption, path in (("affinity label", paths["aff"]), *seeds, ("pseudo-label", paths["pseudo"]),
                          ("prediction", paths["pred"]), ("ground truth", gt_path)):
        pictures.append(label_picture(caption, path, names))
    return pictures


def _drop_empty_columns(rows: list[Sample]) -> None:
    """Remove the pictures no row has (the image stays)."""
    if not rows:
        return
    keep = [j for j in range(len(rows[0].pictures))
            if j == 0 or any(r.pictures[j].uri is not None or r.pictures[j].note != "missing" for r in rows)]
    for row in rows:
        row.pictures = [row.pictures[j] for j in keep]


def has_predictions(workdir: Path, data: LabelledDataset, split: str) -> bool:
    """Whether ``WORKDIR/pred/<split>`` holds a prediction of an image of ``split``."""
    try:
        ids = data.ids(split)
    except WsssError:  # no such split
        return False
    predictions = Layout(workdir).predictions(split)
    return predictions.folder.is_dir() and any(predictions.path(i).exists() for i in ids)


def final_labels(workdir: Path, split: str, ids: Sequence[str]) -> tuple[str, ArtifactSet] | None:
    """The last label set of the pipeline that has some of ``ids``: the predictions of the
    split, else the pseudo-labels; with its name in a sentence."""
    sets = artifact_sets(workdir, split)
    for caption, key in (("prediction", "pred"), ("pseudo-label", "pseudo")):
        if any(sets[key].path(i).exists() for i in ids):
            return caption, sets[key]
    return None


def worst_images(workdir: Path, data: LabelledDataset, split: str, n: int,
                 step: Callable[[Iterable[str], str], Iterable[str]]) -> tuple[list[tuple[str, float]], str]:
    """The ``n`` ids of ``split`` with the lowest per-image mIoU of their final labels
    (:func:`final_labels`) against the ground truth, lowest first (ties by id), and a
    sentence saying how they were ranked, or why they were not. Reads one pair of PNGs
    per image."""
    try:
        ids = data.ids(split)
    except WsssError:
        return [], ""
    with_gt = [i for i in ids if data.has_mask(i)]
    if not with_gt:
        return [], "No ground truth in this split: no ranking by IoU."
    source = final_labels(workdir, split, with_gt)
    if source is None:
        return [], "No prediction or pseudo-label of this split yet: no ranking by IoU."
    caption, labels = source
    scores = []
    for image_id in step([i for i in with_gt if labels.path(i).exists()], f"report: IoU ({split})"):
        gt, pred = read_label_map(data.mask_path(image_id)), read_label_map(labels.path(image_id))
        if gt is None or pred is None or gt.shape != pred.shape:
            continue
        miou = image_miou(gt, pred)
        if miou is not None:
            scores.append((miou, image_id))
    scores.sort()
    worst = [(i, v) for v, i in scores[:n]]
    return worst, (f"The {len(worst)} of {len(scores)} images with the lowest mIoU of their {caption} "
                   f"({labels.name}/) against the ground truth.")


def image_miou(gt: np.ndarray, pred: np.ndarray) -> float | None:
    """Mean IoU in % over the classes in ``gt`` or ``pred`` of one image; pixels labelled 255
    in ``gt`` are ignored, 255 ("unsure") in ``pred`` counts as wrong. None: nothing to score."""
    valid = gt != 255
    if not valid.any():
        return None
    pairs = gt[valid].astype(np.int64) * 256 + pred[valid]
    confusion = np.bincount(pairs, minlength=256 * 256).reshape(256, 256)
    inter = np.diag(confusion)
    pred_count = confusion.sum(0)
    pred_count[255] = 0  # not a class
    union = confusion.sum(1) + pred_count - inter
    present = union > 0
    return float(100 * (inter[present] / union[present]).mean())


def folder_samples(workdir: Path, folder: Path, names: Sequence[str], config: dict[str, Any],
                   step: Callable[[Iterable[str], str], Iterable[str]]) -> SampleSet:
    """Up to FOLDER_LIMIT images of a ``predict --images`` folder (evenly spaced), each with
    its prediction and the two overlaid; there is no ground truth."""
    images = ImageFolder(folder)
    ids = images.ids()
    predictions = folder_predictions(workdir, folder, config)
    picks = np.linspace(0, len(ids) - 1, min(FOLDER_LIMIT, len(ids))).round().astype(int)
    picked = [ids[i] for i in dict.fromkeys(picks.tolist())]
    rows = [Sample(i, folder_row(images, i, predictions.path(i), names))
            for i in step(picked, "report: images")]
    have = sum(predictions.path(i).exists() for i in ids)
    shown = (f"All {len(ids)}" if len(picked) == len(ids)
             else f"{len(picked)} of the {len(ids)} (evenly spaced)")
    note = (f"{shown} images of {folder.resolve()}, with the predictions in {predictions.name}/ "
            f"({have} of {len(ids)} present; predict --images writes them).")
    return SampleSet(f"images folder {folder.resolve().name}", note, rows)


def folder_predictions(workdir: Path, folder: Path, config: dict[str, Any]) -> ArtifactSet:
    """Where ``predict --images folder`` wrote: the set of the config.toml section of a
    predict run of that folder, else ``pred/<folder name>``."""
    layout = Layout(workdir)
    for name, section in config.items():
        stage, _, output = name.partition(":")
        images = section.get("images")
        if stage == "predict" and output and isinstance(images, str) and _same(Path(images), folder):
            return layout.labels(output)
    return layout.predictions(folder.resolve().name)


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def folder_row(images: ImageFolder, image_id: str, path: Path, names: Sequence[str]) -> list[Picture]:
    """Image, prediction, and the prediction's colours over the image."""
    image = try_read(lambda: images.read_image(image_id))
    mask = read_label_map(path)
    pictures = [image_picture(image), label_picture("prediction", path, names, mask)]
    if image is None or mask is None:
        pictures.append(Picture("overlay", note="missing"))
    else:
        if mask.shape != image.shape[:2]:
            mask = resize(mask, image.shape[:2], nearest=True)
        pictures.append(encoded_picture("overlay", thumbnail(tint(image, mask)), "jpeg"))
    return pictures
