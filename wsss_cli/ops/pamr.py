"""Pixel-adaptive mask refinement, PAMR (Araslanov & Roth, CVPR 2020)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def pamr(
    image: Tensor,
    masks: Tensor,
    dilations: Sequence[int] = (1, 2, 4, 8, 12, 24),
    iters: int = 10,
) -> Tensor:
    """Refine ``masks`` by ``iters`` steps of averaging over image-similar neighbours.

    ``image``: ``[B, 3, H, W]`` float (any number of channels works). ``masks``:
    ``[B, K, h, w]`` on the same device; they are first resized to ``H x W`` (bilinear,
    ``align_corners=True``). Returns the refined masks ``[B, K, H, W]`` (contiguous).

    The neighbours of a pixel are the 8 pixels of the 3x3 ring at every dilation ``d``,
    coordinates clamped to the image (replicate padding). Per image channel ``sigma`` is
    the unbiased standard deviation of the ``9 * len(dilations)`` window values (centre
    included, once per dilation); ``kappa_ij = -mean_c |I_ci - I_cj| / (1e-8 + 0.1 sigma_ci)``,
    ``alpha_ij = softmax_j kappa_ij`` and every step is ``m_i <- sum_j alpha_ij m_j``.

    The step is a sparse CSR ``[B*H*W, B*Hp*Wp]`` matrix (``8 * len(dilations)`` entries per
    row) times the masks as ``[pixels, K]``, where ``Hp x Wp`` is the grid padded by the
    largest dilation. Memory is linear in the pixels: a 4-byte weight and a 4-byte column
    index per entry besides the masks, never the ``[B, K, 8 * len(dilations), H, W]`` stack
    of shifted masks.
    """
    if image.ndim != 4 or masks.ndim != 4 or image.shape[0] != masks.shape[0]:
        raise ValueError(
            f"image must be [B, C, H, W] and masks [B, K, h, w] with the same B, got shapes "
            f"{tuple(image.shape)} and {tuple(masks.shape)}"
        )
    if image.device != masks.device:
        raise ValueError(f"image on {image.device} but masks on {masks.device}")
    dilations = [int(d) for d in dilations]
    if not dilations or min(dilations) < 1 or len(set(dilations)) != len(dilations):
        raise ValueError(f"dilations must be distinct positive integers, got {dilations}")
    if iters < 0:
        raise ValueError(f"iters must be >= 0, got {iters}")

    b, _, h, w = image.shape
    k = masks.shape[1]
    pad = max(dilations)
    # lexicographic (dy, dx) order makes the padded flat offsets dy * (w + 2 pad) + dx
    # strictly increasing (|dx| <= pad), i.e. the CSR columns sorted within every row
    offsets = sorted(
        (dy * d, dx * d) for d in dilations for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx
    )
    weights = _neighbour_weights(image.to(masks.dtype), dilations, offsets)
    step, source = _step_matrix(weights, offsets, pad, h, w)

    # pixel-major [B*H*W, K]: each step then reads whole K-vectors of neighbours
    resized = F.interpolate(masks, size=(h, w), mode="bilinear", align_corners=True)
    state = resized.permute(0, 2, 3, 1).reshape(b * h * w, k)
    del resized
    for _ in range(iters):
        state = step @ state.index_select(0, source)
    return state.view(b, h, w, k).permute(0, 3, 1, 2).contiguous()


def _neighbour_weights(
    image: Tensor, dilations: list[int], offsets: list[tuple[int, int]]
) -> Tensor:
    """``alpha`` as ``[B, H, W, J]``, J = ``len(offsets)``, neighbours in ``offsets`` order.

    ``image``: ``[B, C, H, W]``; ``offsets``: the ``(dy, dx)`` ring offsets of ``dilations``.
    """
    b, channels, h, w = image.shape
    pad = max(dilations)
    padded = F.pad(image, [pad] * 4, mode="replicate")
    sb, sc, sy, sx = padded.stride()

    # One strided view per dilation instead of a slice per neighbour: a few large ops
    # rather than hundreds of small ones, whose fixed costs (thread wake-ups, kernel
    # launches) dominate at low resolution.
    def windows(d: int) -> Tensor:
        """The 3x3 windows at dilation ``d``: a view ``[B, C, 3, 3, H, W]`` of ``padded``."""
        corner = padded.storage_offset() + (pad - d) * (sy + sx)
        return padded.as_strided(
            (b, channels, 3, 3, h, w), (sb, sc, d * sy, d * sx, sy, sx), corner
        )

    def copied(d: int) -> Tensor:
        """``windows(d)`` copied to a contiguous ``[B, C, 9, H, W]``: reducing the view in
        place, over its overlapping strides, is several times slower than copy + reduce."""
        return windows(d).reshape(b, channels, 9, h, w)

    # two passes (mean, then squared deviations) keep sigma accurate where it is tiny,
    # and there kappa is most sensitive to it
    count = 9 * len(dilations)
    mean = sum(copied(d).sum(2) for d in dilations).div_(count)
    spread = sum((copied(d) - mean[:, :, None]).square_().sum(2) for d in dilations)
    scale = spread.div_(count - 1).sqrt_().mul_(0.1).add_(1e-8)[:, :, None, None]

    centre = image[:, :, None, None]
    planes = image.new_empty(b, len(dilations), 3, 3, h, w)
    for i, d in enumerate(dilations):
        torch.sum((centre - windows(d)).abs_().div_(scale), 1, out=planes[:, i])
    slot = {
        (dy * d, dx * d): (i * 3 + dy + 1) * 3 + dx + 1
        for i, d in enumerate(dilations)
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    }
    ring = torch.tensor([slot[offset] for offset in offsets], device=image.device)
    # the gather drops the window centres and makes the layout pixel-major in one copy
    kappa = planes.view(b, 9 * len(dilations), h, w).permute(0, 2, 3, 1)[..., ring]
    del planes
    return kappa.div_(-channels).softmax(-1)


def _step_matrix(
    weights: Tensor, offsets: list[tuple[int, int]], pad: int, h: int, w: int
) -> tuple[Tensor, Tensor]:
    """One PAMR step as ``(matrix, source)``: ``next = matrix @ masks_flat[source]``.

    ``weights``: ``[B, H, W, J]``. ``masks_flat`` is ``[B*H*W, K]`` (pixels row-major,
    image after image). ``source``: ``[B*Hp*Wp]`` row of ``masks_flat`` for every cell of
    the grid padded by ``pad`` (replicate padding as a gather); ``matrix``: CSR
    ``[B*H*W, B*Hp*Wp]`` with J entries per row, the ``weights`` at the padded neighbours.
    Padding first keeps every row's J columns distinct and in the same order, so no
    per-pixel sort or merge of clamped duplicates is needed.
    """
    b, _, _, j = weights.shape
    device = weights.device
    hp, wp = h + 2 * pad, w + 2 * pad
    n, n_pad = h * w, hp * wp
    # int32 indices make the sparse product markedly faster on CPU (MKL) than int64
    index_dtype = torch.int32 if max(b * n * j, b * n_pad) < 2**31 else torch.int64

    rows = torch.arange(pad, pad + h, dtype=index_dtype, device=device)[:, None] * wp
    centres = (rows + torch.arange(pad, pad + w, dtype=index_dtype, device=device)).view(-1)
    shifts = torch.tensor([dy * wp + dx for dy, dx in offsets], dtype=index_dtype, device=device)
    images = torch.arange(b, dtype=index_dtype, device=device)[:, None, None]
    # shifts last: the only [B, N, J] temporary is the result itself
    columns = ((centres[None, :, None] + images * n_pad) + shifts).view(-1)
    crow = torch.arange(0, b * n * j + 1, j, dtype=index_dtype, device=device)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        matrix = torch.sparse_csr_tensor(
            crow, columns, weights.reshape(-1), size=(b * n, b * n_pad), check_invariants=False
        )

    ys = (torch.arange(hp, device=device) - pad).clamp_(0, h - 1)
    xs = (torch.arange(wp, device=device) - pad).clamp_(0, w - 1)
    cells = (ys[:, None] * w + xs).view(-1)
    source = (cells + torch.arange(b, device=device)[:, None] * n).view(-1)
    return matrix, source
