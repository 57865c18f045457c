"""Reading images and masks, writing palette PNGs: the only place pixels touch disk.

Images are decoded with OpenCV (fast, and it converts grayscale, RGBA and CMYK
JPEGs to 3 channels); masks and predictions with Pillow, because OpenCV expands
palette PNGs to colours and we need the indices.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from wsss_cli.errors import WsssError
from wsss_cli.workdir import atomic_path

cv2.setNumThreads(1)  # the DataLoader workers and joblib provide the parallelism
# a broken file is reported as one WsssError line; OpenCV's own warnings about it
# ("PNG input buffer is incomplete") would be extra lines on stderr
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map, ``[n, 3]`` uint8 (class c -> bits of c spread over RGB)."""
    palette = np.zeros((n, 3), np.uint8)
    for c in range(n):
        r = g = b = 0
        v = c
        for shift in range(7, -1, -1):
            r |= (v & 1) << shift
            g |= ((v >> 1) & 1) << shift
            b |= ((v >> 2) & 1) << shift
            v >>= 3
        palette[c] = (r, g, b)
    return palette


_PALETTE = voc_palette().reshape(-1).tolist()


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]``; raises WsssError for a missing, unreadable or truncated file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise WsssError(f"{path}: image not found") from None
    except OSError as e:
        raise WsssError(f"{path}: cannot read image ({e.strerror})") from None
    _check_jpeg_end(path, data[:2], data[-1024:])
    # pixels as stored, like Pillow reads the masks: an EXIF rotation applied to the
    # image alone would turn it against its mask
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8),
                             cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION) if data else None
    except cv2.error:  # some malformed headers fail an assertion instead of returning None
        image = None
    if image is None:
        raise WsssError(f"{path}: not a readable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _check_jpeg_end(path: Path, head: bytes, tail: bytes) -> None:
    if head == b"\xff\xd8" and b"\xff\xd9" not in tail:
        # libjpeg only warns on a missing end-of-image marker and pads with grey
        raise WsssError(f"{path}: truncated JPEG (no end-of-image marker)")


def check_image(path: Path) -> None:
    """The cheap checks run on a whole split before a stage starts: the file is there and
    readable, its header decodes, a JPEG has its end marker. Reads the header and the
    last kilobyte, not the pixels."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(max(0, f.seek(0, 2) - 1024))
            tail = f.read()
    except FileNotFoundError:
        raise WsssError(f"{path}: image not found") from None
    except OSError as e:
        raise WsssError(f"{path}: cannot read image ({e.strerror})") from None
    _check_jpeg_end(path, head, tail)
    if image_size(path) is None:
        raise WsssError(f"{path}: not a readable image")


def image_size(path: Path) -> tuple[int, int] | None:
    """``(H, W)`` of an image from its header, without decoding it; None if unreadable
    (reading the image itself then reports why)."""
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def read_mask(path: Path) -> np.ndarray:
    """Class-index mask ``[H, W]`` uint8 from a palette or grayscale PNG (255 = ignore)."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "I", "I;16"):
                raise WsssError(f"{path}: mask must be a palette or grayscale PNG, got mode {im.mode}")
            mask = np.asarray(im)
    except FileNotFoundError:
        raise WsssError(f"{path}: mask not found") from None
    except OSError as e:
        raise WsssError(f"{path}: not a readable mask ({e})") from None
    if mask.max(initial=0) > 255:
        raise WsssError(f"{path}: mask values above 255")
    return mask.astype(np.uint8)


def write_palette_png(path: Path, mask: np.ndarray) -> None:
    """Write a class-index mask ``[H, W]`` (values 0..255) as a VOC palette PNG, atomically."""
    im = Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8), mode="P")
    im.putpalette(_PALETTE)
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")


def write_id_png(path: Path, ids: np.ndarray) -> None:
    """Write a region-id map ``[H, W]`` (0..65535, e.g. superpixels) as a 16-bit PNG, atomically."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(ids, dtype=np.uint16))
    if not ok:
        raise RuntimeError(f"PNG encoding failed for {path}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())


def read_id_png(path: Path) -> np.ndarray:
    """The region-id map ``[H, W]`` uint16 written by :func:`write_id_png`."""
    ids = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if ids is None or ids.ndim != 2:
        raise WsssError(f"{path}: not a readable region-id PNG (remove it to remake it)")
    return ids


def write_jpeg(path: Path, image: np.ndarray, quality: int = 92) -> None:
    """Write an RGB uint8 ``[H, W, 3]`` image as JPEG, atomically."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for {path}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())
