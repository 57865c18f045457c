"""Fully connected CRF refinement of class probabilities (as PSA's ``crf_inference``).

Two backends compute the same mean-field inference (Krähenbühl & Koltun, NIPS 2011):
pydensecrf (C++, CPU) and a PyTorch port of its permutohedral-lattice filtering
(``ops.permutohedral``, CPU or CUDA).
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import numpy as np
import torch

from wsss_cli.errors import WsssError
from wsss_cli.ops.permutohedral import Permutohedral

CRF_BACKENDS = ("auto", "torch", "pydensecrf")
# pydensecrf's unary_from_softmax clip
_MIN_PROB = 1e-5
# fewer labels than this: the mean field's softmax runs on the transpose (_softmax_rows)
_SHORT_ROWS = 16


def dense_crf(
    image: np.ndarray,
    probs: np.ndarray,
    iters: int = 10,
    gauss_sxy: float = 3,
    gauss_compat: float = 3,
    bilateral_sxy: float = 80,
    bilateral_srgb: float = 13,
    bilateral_compat: float = 10,
    backend: str = "auto",
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Mean-field inference of a dense CRF (Krähenbühl & Koltun) over an image.

    ``image``: uint8 ``[H, W, 3]`` RGB. ``probs``: float ``[K, H, W]``, a distribution over
    the K labels at every pixel. The unary is ``-log(clip(probs, 1e-5, 1))`` (float32), the
    pairwise terms one Gaussian (``gauss_sxy``, ``gauss_compat``) and one bilateral
    (``bilateral_sxy``, ``bilateral_srgb``, ``bilateral_compat``) Potts kernel; ``iters``
    mean-field steps. Returns the posterior, float32 ``[K, H, W]``.

    ``backend``: "pydensecrf", "torch" (:func:`dense_crf_torch` on ``device``), or "auto"
    (pydensecrf when it is installed, torch otherwise).
    """
    if backend not in CRF_BACKENDS:
        raise ValueError(f"backend must be one of {CRF_BACKENDS}, got {backend!r}")
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
    params = dict(
        iters=iters,
        gauss_sxy=gauss_sxy,
        gauss_compat=gauss_compat,
        bilateral_sxy=bilateral_sxy,
        bilateral_srgb=bilateral_srgb,
        bilateral_compat=bilateral_compat,
    )
    if backend == "auto":
        backend = "pydensecrf" if _load_pydensecrf() is not None else "torch"
    if backend == "torch":
        # copies: torch takes neither read-only (joblib's memory maps) nor negative-stride arrays
        image_t = torch.from_numpy(np.array(image, order="C"))
        probs_t = torch.from_numpy(np.array(probs, dtype=np.float32, order="C"))
        return dense_crf_torch(image_t, probs_t[None].to(device), **params)[0].cpu().numpy()
    return _dense_crf_pydensecrf(image, probs, **params)


def _load_pydensecrf() -> tuple[ModuleType, Callable[[np.ndarray], np.ndarray]] | None:
    """pydensecrf's ``densecrf`` module and ``unary_from_softmax``, None if it is not installed."""
    try:
        import pydensecrf.densecrf as dcrf
        from pydensecrf.utils import unary_from_softmax
    except ImportError:
        return None
    return dcrf, unary_from_softmax


def _dense_crf_pydensecrf(
    image: np.ndarray,
    probs: np.ndarray,
    iters: int,
    gauss_sxy: float,
    gauss_compat: float,
    bilateral_sxy: float,
    bilateral_srgb: float,
    bilateral_compat: float,
) -> np.ndarray:
    """:func:`dense_crf` with pydensecrf; inputs already checked. Returns ``[K, H, W]`` float32."""
    modules = _load_pydensecrf()
    if modules is None:
        raise WsssError("the pydensecrf CRF backend needs pydensecrf: pip install wsss[pydensecrf]")
    dcrf, unary_from_softmax = modules
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


def dense_crf_torch(
    image: torch.Tensor,
    probs: torch.Tensor,
    iters: int = 10,
    gauss_sxy: float = 3,
    gauss_compat: float = 3,
    bilateral_sxy: float = 80,
    bilateral_srgb: float = 13,
    bilateral_compat: float = 10,
) -> torch.Tensor:
    """:func:`dense_crf` of a batch of images of one size, on ``probs``' device.

    ``image``: uint8 ``[B, H, W, 3]`` (or ``[H, W, 3]`` for B = 1) RGB. ``probs``: float
    ``[B, K, H, W]``. Returns the posteriors, float32 ``[B, K, H, W]``. The images are done
    one after the other, with a lattice per image and kernel: the per-image overhead (about
    10 ms on a CPU core) is small beside the filtering, so one lattice over the batch would
    not pay on the CPU.
    """
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or image.shape[-1] != 3 or image.dtype != torch.uint8:
        raise ValueError(f"image must be uint8 [B, H, W, 3], got {image.dtype} {tuple(image.shape)}")
    if probs.ndim != 4 or probs.shape[0] != image.shape[0] or probs.shape[2:] != image.shape[1:3]:
        raise ValueError(
            f"probs must be [B, K, H, W] to match image {tuple(image.shape)}, got {tuple(probs.shape)}"
        )
    if iters < 0:
        raise ValueError(f"iters must be >= 0, got {iters}")
    image = image.to(probs.device)
    out = []
    for b in range(probs.shape[0]):
        kernels = _kernels(image[b], gauss_sxy, gauss_compat, bilateral_sxy, bilateral_srgb, bilateral_compat)
        out.append(_mean_field(probs[b], kernels, iters))
    return torch.stack(out)


def _kernels(
    image: torch.Tensor,
    gauss_sxy: float,
    gauss_compat: float,
    bilateral_sxy: float,
    bilateral_srgb: float,
    bilateral_compat: float,
) -> list[Permutohedral]:
    """The Gaussian and the bilateral kernel of ``image`` ``[H, W, 3]`` uint8 as lattices that
    compute ``w * norm * filter(norm * Q)``: pydensecrf's features (x, y[, r, g, b]) / std in
    float32, its symmetric normalisation ``norm = 1 / sqrt(filter(1))`` and Potts weight w."""
    h, w, _ = image.shape
    device = image.device

    def scaled(values: torch.Tensor, std: float) -> torch.Tensor:
        return values / torch.tensor(std, dtype=torch.float32, device=device)

    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float32, device=device),
        torch.arange(w, dtype=torch.float32, device=device),
        indexing="ij",
    )
    xy = torch.stack([xs.reshape(-1), ys.reshape(-1)], 1)
    rgb = image.reshape(-1, 3).float()
    kernels = []
    for features, compat in (
        (scaled(xy, gauss_sxy), gauss_compat),
        (torch.cat([scaled(xy, bilateral_sxy), scaled(rgb, bilateral_srgb)], 1), bilateral_compat),
    ):
        lattice = Permutohedral(features)
        norm = lattice.filter(torch.ones(h * w, 1, device=device)).add_(1e-20).rsqrt_().view(-1)
        kernels.append(lattice.scaled(norm, compat * norm))
    return kernels


def _mean_field(probs: torch.Tensor, kernels: list[Permutohedral], iters: int) -> torch.Tensor:
    """``iters`` mean-field steps from ``probs`` ``[K, H, W]`` -> posterior ``[K, H, W]`` float32.

    As densecrf: ``Q = softmax(-unary)``, then ``Q = softmax(-unary + sum_k w_k n_k F_k(n_k Q))``
    (the Potts compatibility ``-w`` subtracted from the energy), with ``kernels`` from
    :func:`_kernels`."""
    k, h, w = probs.shape
    # -unary, [N, K] rows for the sparse products
    log_probs = torch.log(probs.float().clamp(_MIN_PROB, 1)).reshape(k, h * w).T.contiguous()
    q = _softmax_rows(log_probs)
    for _ in range(iters):
        energy = log_probs
        for kernel in kernels:
            energy = kernel.filter(q, add_to=energy)
        q = _softmax_rows(energy)
    return q.T.reshape(k, h, w).contiguous()


def _softmax_rows(energy: torch.Tensor) -> torch.Tensor:
    """Softmax of every row of ``[N, K]``. Rows shorter than a SIMD register (16 floats
    with AVX-512) make torch's CPU softmax fall back to scalar code, 5-8x slower than the
    softmax down the columns of the transpose (docs/results.md#dense-crf)."""
    if energy.device.type == "cpu" and energy.shape[1] < _SHORT_ROWS:
        return torch.softmax(energy.T, 0).T
    return torch.softmax(energy, 1)
