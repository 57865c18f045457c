"""torch Datasets over a LabelledDataset: training samples and inference images."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from torch.utils.data import Dataset

from wsss_cli.data.augment import AugmentConfig, augment, erase_pixels, normalize, resize
from wsss_cli.data.dataset import ImageFolder, LabelledDataset
from wsss_cli.data.io import read_id_png, read_mask
from wsss_cli.errors import WsssError
from wsss_cli.ops import affinity_labels
from wsss_cli.workdir import ArtifactSet


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one training sample: the same for a given (seed, epoch, index)."""
    return np.random.default_rng([seed, epoch, index])


def ignore_background_near_objects(label: np.ndarray, band: int, image: np.ndarray | None = None,
                                   color_ratio: float = 0.0) -> np.ndarray:
    """Label map uint8 ``[H, W]`` (0 = background, 255 = ignore) with the background pixels
    within ``band`` pixels of an object set to 255 (OpenCV's elliptic structuring element:
    a digital disc of radius ``band``).

    Pseudo-labels miss the thin ends and corners of objects (the CAMs they grow from are
    coarse), so the background next to an object is their least reliable label. With
    ``color_ratio`` > 0 and the image (uint8 RGB ``[H, W, 3]``) only the band's pixels that
    look like the object are ignored, which keeps the background that is plainly background:
    CIELAB distance (image blurred 5x5) to the object's mean colour below ``color_ratio``
    times the distance to the mean colour of the background in the object's band.
    """
    if band <= 0:
        return label
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band + 1, 2 * band + 1))
    background = label == 0
    objects = ~background & (label < 255)
    if color_ratio <= 0:
        near = cv2.dilate(objects.astype(np.uint8), disc) > 0
        return np.where(near & background, np.uint8(255), label)
    if image is None:
        raise ValueError("a color_ratio needs the image")
    lab = cv2.cvtColor(cv2.GaussianBlur(image, (5, 5), 0), cv2.COLOR_RGB2LAB).astype(np.float32)
    ignored = np.zeros(label.shape, bool)
    for cls in np.unique(label[objects]):
        obj = label == cls
        near = (cv2.dilate(obj.astype(np.uint8), disc) > 0) & background
        if not near.any():
            continue
        ring = lab[near]
        to_object = np.linalg.norm(ring - lab[obj].mean(0), axis=1)
        to_background = np.linalg.norm(ring - ring.mean(0), axis=1)
        ignored[near] |= to_object < color_ratio * to_background
    return np.where(ignored, np.uint8(255), label)


def read_label_map(label_dir: Path, image_id: str, image: np.ndarray) -> np.ndarray:
    """``label_dir/<id>.png`` as uint8 ``[H, W]``; a size other than the image's is a user error."""
    label = read_mask(label_dir / f"{image_id}.png")
    if label.shape != image.shape[:2]:
        raise WsssError(f"{label_dir / image_id}.png: size {label.shape[::-1]} differs "
                        f"from its image {image.shape[1::-1]}")
    return label


class ClassificationSet(Dataset):
    """``set[(epoch, i)]`` -> (image float32 ``[3, crop, crop]``, labels float32 ``[C]``).

    With ``erased`` (a folder of ``<id>.png``, nonzero = erase; adversarial erasing) those
    pixels are set to the normalisation mean before augmentation, so they become 0.
    """

    def __init__(self, data: LabelledDataset, ids: list[str], aug: AugmentConfig, seed: int,
                 erased: Path | None = None):
        self.data, self.ids, self.aug, self.seed, self.erased = data, ids, aug, seed, erased
        self.labels = [data.label_vector(i) for i in ids]  # read up front: fail before training

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, key: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        epoch, index = key
        image = self.data.read_image(self.ids[index])
        if self.erased is not None:
            image = erase_pixels(image, read_mask(self.erased / f"{self.ids[index]}.png") > 0)
        image, _ = augment(image, None, self.aug, sample_rng(self.seed, epoch, index))
        return image, self.labels[index]


class ImageSet(Dataset):
    """``set[i]`` -> (id, RGB uint8 image ``[H, W, 3]``) for inference (batch size 1)."""

    def __init__(self, data: LabelledDataset | ImageFolder, ids: list[str]):
        self.data, self.ids = data, ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[str, np.ndarray]:
        return self.ids[index], self.data.read_image(self.ids[index])


class SegmentationSet(Dataset):
    """``set[(epoch, i)]`` -> (image float32 ``[3, crop, crop]``, label int64 ``[crop, crop]``).

    Labels are class-index PNGs at image size (pseudo-labels or ground truth), 255 = ignore;
    with ``ignore_band`` > 0 the background within that many pixels of an object is ignored
    too, with ``ignore_band_color`` > 0 only where it looks like the object
    (``ignore_background_near_objects``).
    """

    def __init__(self, data: LabelledDataset, ids: list[str], label_dir: Path, aug: AugmentConfig,
                 seed: int, ignore_band: int = 0, ignore_band_color: float = 0.0):
        self.data, self.ids, self.label_dir = data, ids, Path(label_dir)
        self.aug, self.seed = aug, seed
        self.ignore_band, self.ignore_band_color = ignore_band, ignore_band_color
        # the band of each image, bit-packed, computed once per loader process (it is the
        # same every epoch and costs more than decoding the image)
        self._bands: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, key: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        epoch, index = key
        image_id = self.ids[index]
        image = self.data.read_image(image_id)
        label = self._with_band(index, read_label_map(self.label_dir, image_id, image), image)
        image, label = augment(image, label, self.aug, sample_rng(self.seed, epoch, index))
        return image, label.astype(np.int64)

    def _with_band(self, index: int, label: np.ndarray, image: np.ndarray) -> np.ndarray:
        if self.ignore_band <= 0:
            return label
        if index not in self._bands:
            banded = ignore_background_near_objects(label, self.ignore_band, image,
                                                    self.ignore_band_color)
            self._bands[index] = np.packbits(banded != label)
        band = np.unpackbits(self._bands[index], count=label.size).reshape(label.shape)
        return np.where(band > 0, np.uint8(255), label)


class SeedSet(Dataset):
    """``set[(epoch, i)]`` -> (image float32 ``[3, size, size]``, seeds int64 ``[size, size]``,
    labels float32 ``[C]``): SEC's input, the whole image and its seed map (0 background,
    c class, 255 unknown) resized to ``size`` x ``size`` (seeds by nearest neighbour) and
    flipped at random, no crop, so that every labelled class stays in view."""

    def __init__(self, data: LabelledDataset, ids: list[str], label_dir: Path, size: int, seed: int):
        self.data, self.ids, self.label_dir, self.size, self.seed = data, ids, Path(label_dir), size, seed
        self.labels = [data.label_vector(i) for i in ids]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, key: tuple[int, int]) -> tuple[np.ndarray, ...]:
        epoch, index = key
        image = self.data.read_image(self.ids[index])
        seeds = read_label_map(self.label_dir, self.ids[index], image)
        image, seeds = resize(image, (self.size, self.size)), resize(seeds, (self.size, self.size), True)
        if sample_rng(self.seed, epoch, index).random() < 0.5:
            image, seeds = image[:, ::-1], seeds[:, ::-1]
        return normalize(image), seeds.astype(np.int64), self.labels[index]


class AffinitySet(Dataset):
    """``set[(epoch, i)]`` -> (image ``[3, crop, crop]``, bg_pos, fg_pos, neg ``[P, n]`` bool).

    The affinity label map (0 / class / 255) is augmented with its image, then sampled
    at the centres of the feature grid's cells (stride ``stride``) and turned into pair
    labels by ``ops.affinity_labels``.
    """

    def __init__(self, data: LabelledDataset, ids: list[str], label_dir: Path, aug: AugmentConfig,
                 stride: int, radius: int, seed: int):
        self.data, self.ids, self.label_dir = data, ids, Path(label_dir)
        self.aug, self.stride, self.radius, self.seed = aug, stride, radius, seed

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, key: tuple[int, int]) -> tuple[np.ndarray, ...]:
        epoch, index = key
        image_id = self.ids[index]
        image = self.data.read_image(image_id)
        label = read_label_map(self.label_dir, image_id, image)
        image, label = augment(image, label, self.aug, sample_rng(self.seed, epoch, index))
        half = self.stride // 2
        grid = label[half :: self.stride, half :: self.stride]
        return (image, *affinity_labels(grid, self.radius))


class RegionSet(Dataset):
    """``set[(epoch, i)]`` -> (image float32 ``[3, crop, crop]``, regions int64 ``[crop, crop]``
    (255 = unknown), superpixel ids int64 ``[crop, crop]``, image classes float32 ``[K]`` (1 =
    present, background always))."""

    def __init__(self, data: LabelledDataset, ids: list[str], regions: ArtifactSet,
                 superpixels: ArtifactSet, aug: AugmentConfig, seed: int):
        self.data, self.ids, self.regions, self.superpixels = data, ids, regions, superpixels
        self.aug, self.seed = aug, seed

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, key: tuple[int, int]) -> tuple[np.ndarray, ...]:
        epoch, index = key
        image_id = self.ids[index]
        image = self.data.read_image(image_id)
        maps = np.stack([read_mask(self.regions.path(image_id)).astype(np.uint16),
                         read_id_png(self.superpixels.path(image_id))], axis=-1)
        image, maps = augment(image, maps, self.aug, sample_rng(self.seed, epoch, index))
        present = np.zeros(self.data.num_classes, np.float32)
        present[[0, *self.data.labels(image_id)]] = 1
        return image, maps[..., 0].astype(np.int64), maps[..., 1].astype(np.int64), present
