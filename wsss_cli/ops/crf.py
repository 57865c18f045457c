"""Fully connected CRF refinement of class probabilities (as PSA's ``crf_inference``)."""

from __future__ import annotations

import numpy as np
import pydensecrf.densecrf as dcrf
from pydensecrf.utils import unary_from_softmax


def dense_crf(
    image: np.ndarray,
    probs: np.ndarray,
    iters: int = 10,
    gauss_sxy: float = 3,
    gauss_compat: float = 3,
    bilateral_sxy: float = 80,
    bilateral_srgb: float = 13,
    bilateral_compat: float = 10,
) -> np.ndarray:
    """Mean-field inference of a dense CRF (Krähenbühl & Koltun) over an image.

    ``image``: uint8 ``[H, W, 3]`` RGB. ``probs``: float ``[K, H, W]``, a distribution over
    the K labels at every pixel. The unary is ``-log(clip(probs, 1e-5, 1))`` (float32), the
    pairwise terms one Gaussian (``gauss_sxy``, ``gauss_compat``) and one bilateral
    (``bilateral_sxy``, ``bilateral_srgb``, ``bilateral_compat``) Potts kernel; ``iters``
    mean-field steps. Returns the posterior, float32 ``[K, H, W]``.
    """
    image = np.asarray(image)
    probs = np.asarray(probs)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be [H, W, 3], got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    if probs.ndim != 3:
        raise ValueError(f"probs must be [K, H, W], got shape {probs.shape}")
    if probs.shape[1:] != image.shape[:2]:
        raise ValueError(f"probs spatial size {probs.shape[1:]} != image size {image.shape[:2]}")
    if probs.shape[0] < 1:
        raise ValueError("probs needs at least one label")
    if iters < 0:
        raise ValueError(f"iters must be >= 0, got {iters}")
    n_labels, h, w = probs.shape

    crf = dcrf.DenseCRF2D(w, h, n_labels)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs)))
    crf.addPairwiseGaussian(sxy=gauss_sxy, compat=gauss_compat)
    crf.addPairwiseBilateral(
        sxy=bilateral_sxy,
        srgb=bilateral_srgb,
        # pydensecrf needs a writable buffer; joblib hands workers read-only memmaps
        rgbim=np.require(image, requirements=["C", "W"]),
        compat=bilateral_compat,
    )
    q = crf.inference(iters)
    return np.asarray(q, dtype=np.float32).reshape(n_labels, h, w)
