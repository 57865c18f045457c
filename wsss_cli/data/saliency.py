"""Class-agnostic saliency maps: a user's folder of ``<id>.png`` (0-255, any method run
elsewhere) or OpenCV's unsupervised static saliency (spectral residual, fine-grained)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from wsss_cli.data.io import image_size, read_mask
from wsss_cli.errors import WsssError
from wsss_cli.options import option

BUILT_IN = ("spectral", "fine-grained")
SALIENCY_THRESHOLD = 0.1  # see docs/results.md#make-seeds


def saliency_option(what: str) -> Any:
    """``--saliency DIR|spectral|fine-grained``: ``what`` it does in the stage."""
    return option(None, f"{what}: a folder of <id>.png saliency maps (0-255, any method), or "
                        "OpenCV's " + " / ".join(BUILT_IN) + ".",
                  metavar="DIR|" + "|".join(BUILT_IN), hashed="unless-default")


def saliency_threshold_option(default: float) -> Any:
    return option(default, "Background where the saliency (0-1) is below this.", min=0, max=1,
                  hashed="unless-default")


class Saliency:
    """``source``: ``spectral``, ``fine-grained`` or a folder of ``<id>.png``."""

    def __init__(self, source: str):
        self.source = source
        self.folder = None if source in BUILT_IN else Path(source).expanduser()
        if self.folder is not None and not self.folder.is_dir():
            raise WsssError(f"--saliency {source}: not spectral, fine-grained or a folder of "
                            "<id>.png saliency maps")
        if self.folder is None and not hasattr(cv2, "saliency"):
            raise WsssError(f"--saliency {source} needs OpenCV's saliency module "
                            "(opencv-contrib-python-headless)")

    @classmethod
    def checked(cls, source: str, data: Any, ids: list[str]) -> Saliency:
        """The saliency of ``source`` for images ``ids`` of ``data``; a folder must hold a
        readable map of each image's size, checked before anything is written (one line
        names the first that does not)."""
        saliency = cls(source)
        if saliency.folder is not None:
            saliency._check(ids, {i: image_size(data.image_path(i)) for i in ids})
        return saliency

    def _check(self, ids: list[str], sizes: dict[str, tuple[int, int]]) -> None:
        for image_id in ids:
            path = self.folder / f"{image_id}.png"
            if not path.is_file():
                raise WsssError(f"{path}: saliency map missing")
            shape = read_mask(path).shape
            if shape != sizes[image_id]:
                raise WsssError(f"{path}: saliency map is {shape[1]}x{shape[0]}, its image "
                                f"{sizes[image_id][1]}x{sizes[image_id][0]}")

    def __call__(self, image_id: str, image: np.ndarray) -> np.ndarray:
        """Saliency float32 ``[H, W]`` in [0, 1] of RGB uint8 ``image`` ``[H, W, 3]``."""
        if self.folder is not None:
            return read_mask(self.folder / f"{image_id}.png").astype(np.float32) / 255
        detector = (cv2.saliency.StaticSaliencySpectralResidual_create() if self.source == "spectral"
                    else cv2.saliency.StaticSaliencyFineGrained_create())
        ok, found = detector.computeSaliency(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        if not ok:
            raise WsssError(f"{image_id}: OpenCV's {self.source} saliency failed")
        found = found.astype(np.float32)
        return found / 255 if found.max() > 1 else found
