"""Random walk propagation of class scores over a feature affinity graph (PSA)."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from wsss_cli.ops.affinity import affinity_offsets

# Channels are reduced in chunks of at most this many elements (channels x pixels), which
# keeps the temporary of the feature difference small whatever C is.
_CHUNK_ELEMENTS = 1 << 19


def random_walk(
    scores: Tensor, features: Tensor, radius: int = 5, beta: float = 8, logt: int = 8
) -> Tensor:
    """Propagate ``scores`` by ``2**logt`` steps of a random walk on the affinity graph.

    ``scores``: ``[K, h, w]`` (K channels, background included). ``features``: ``[C, h, w]``
    on the same grid and device. Returns ``[K, h, w]`` in the dtype of ``scores``.

    Nodes are the ``N = h*w`` grid points; every pair ``i != j`` with
    ``dy^2 + dx^2 < radius^2`` is an edge (borders included), plus a self-loop.
    ``a_ij = exp(-mean_c |f_ci - f_cj|)``, ``a_ii = 1``, ``A = a**beta``, ``T = A D^-1``
    (``d_j`` = column sums) and the result is ``scores_flat [K, N] @ T^(2^logt)``.

    ``T`` is never formed densely: its transpose ``D^-1 A`` is a CSR matrix with one row per
    pixel and at most ``len(disk)`` (69 for ``radius = 5``) entries per row, and the walk is
    ``2**logt`` sparse products with the ``[N, K]`` scores, so memory is linear in ``N``.
    Computation is float64 when either input is float64, float32 otherwise.
    """
    if scores.ndim != 3 or features.ndim != 3:
        raise ValueError(
            f"scores must be [K, h, w] and features [C, h, w], got shapes "
            f"{tuple(scores.shape)} and {tuple(features.shape)}"
        )
    if scores.shape[1:] != features.shape[1:]:
        raise ValueError(
            f"scores grid {tuple(scores.shape[1:])} != features grid {tuple(features.shape[1:])}"
        )
    if scores.device != features.device:
        raise ValueError(f"scores on {scores.device} but features on {features.device}")
    if features.shape[0] < 1 or scores.shape[1] * scores.shape[2] < 1:
        raise ValueError(
            f"features need a channel and the grid a pixel, got shapes "
            f"{tuple(scores.shape)} and {tuple(features.shape)}"
        )
    if radius < 1:
        raise ValueError(f"radius must be >= 1, got {radius}")
    if logt < 0:
        raise ValueError(f"logt must be >= 0, got {logt}")
    wide = torch.float64 in (scores.dtype, features.dtype)
    dtype = torch.float64 if wide else torch.float32
    k, h, w = scores.shape

    walk = _walk_matrix(features.to(dtype), radius, beta)
    # [N, K] so that each step is one CSR @ dense product: s <- D^-1 A s == (s^T T)^T
    state = scores.to(dtype).reshape(k, h * w).t().contiguous()
    for _ in range(2**logt):
        state = walk @ state
    return state.t().reshape(k, h, w).to(scores.dtype)


def _walk_matrix(features: Tensor, radius: int, beta: float) -> Tensor:
    """``D^-1 A`` as a sparse CSR ``[N, N]`` tensor on the features' device.

    ``features``: ``[C, h, w]``. Row ``i`` holds ``A_ij / d_i`` for the neighbours ``j`` of
    pixel ``i`` inside the grid (self included), columns in increasing order. Entries whose
    affinity underflowed to 0 are left out, which changes no product.
    """
    c, h, w = features.shape
    n = h * w
    device, dtype = features.device, features.dtype
    half = affinity_offsets(radius)
    # lexicographic (dy, dx) order == increasing flat column index within a row
    disk = sorted(half + [(0, 0)] + [(-dy, -dx) for dy, dx in half])
    slot = {off: m for m, off in enumerate(disk)}

    # [h, w, M] so that reshaping to [N, M] gives the CSR rows without a transposed copy
    weight = torch.zeros(h, w, len(disk), dtype=dtype, device=device)
    weight[:, :, slot[(0, 0)]] = 1
    chunk = max(1, _CHUNK_ELEMENTS // n)
    for dy, dx in half:
        # p = (y, x) in [ys, xs] has its neighbour p + (dy, dx) in [yt, xt]; dy >= 0 always
        ys, xs = slice(0, h - dy), slice(max(0, -dx), w - max(0, dx))
        yt, xt = slice(dy, h), slice(max(0, dx), w - max(0, -dx))
        if h <= dy or xs.stop <= xs.start:
            continue
        dist = torch.zeros(h - dy, xs.stop - xs.start, dtype=dtype, device=device)
        for c0 in range(0, c, chunk):
            part = features[c0 : c0 + chunk]
            dist += (part[:, ys, xs] - part[:, yt, xt]).abs_().sum(0)
        # exp(-beta * mean) == exp(-mean) ** beta, with one rounding instead of a power's
        aff = torch.exp(dist.mul_(-beta / c))
        weight[ys, xs, slot[(dy, dx)]] = aff
        weight[yt, xt, slot[(-dy, -dx)]] = aff

    weight = weight.reshape(n, len(disk))
    weight /= weight.sum(1, keepdim=True)
    # one flat index of the kept entries serves both values and columns: boolean indexing
    # of each would build a [nnz, 2] int64 index twice, the largest temporary here
    keep = weight != 0
    counts = keep.sum(1)
    kept = keep.view(-1).nonzero().squeeze(1)
    del keep
    values = weight.view(-1)[kept]
    del weight
    # int32 indices make the sparse product markedly faster on CPU (MKL) than int64
    index_dtype = torch.int32 if n * len(disk) < 2**31 else torch.int64
    shifts = torch.tensor([dy * w + dx for dy, dx in disk], dtype=index_dtype, device=device)
    columns = (torch.arange(n, dtype=index_dtype, device=device)[:, None] + shifts).view(-1)
    columns = columns[kept]
    del kept
    crow = torch.zeros(n + 1, dtype=index_dtype, device=device)
    crow[1:] = torch.cumsum(counts, 0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, columns, values, size=(n, n), check_invariants=False)
