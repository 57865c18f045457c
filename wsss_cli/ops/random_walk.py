"""Random walk propagation of class scores over a feature affinity graph (PSA)."""

from __future__ import annotations

import ctypes

import torch
import torch.nn.functional as F
from torch import Tensor

from wsss_cli.ops import native
from wsss_cli.ops.affinity import affinity_offsets

BACKENDS = ("auto", "torch", "native")

# Channels are reduced in chunks of at most this many elements (images x channels x pixels),
# which keeps the temporary of the feature difference small (in cache) whatever C is.
_CHUNK_ELEMENTS = 1 << 19
# Score rows are zero-padded to a multiple of this many columns: the CPU kernel of
# embedding_bag (FBGEMM) walks 24 columns about 1.3x faster than 21 (no ragged vector tail).
_COLUMN_MULTIPLE = 8
# the native kernel walks at most this many score columns at once (more: in turns)
_NATIVE_COLUMNS = 32
# and gives each of torch's threads a band of at least this many pixels: on smaller bands
# the threads wait for each other more than they work (docs/results.md#random-walk)
_NATIVE_PIXELS_PER_THREAD = 1024


def random_walk(
    scores: Tensor, features: Tensor, radius: int = 5, beta: float = 8, logt: int = 8,
    backend: str = "auto",
) -> Tensor:
    """Propagate ``scores`` by ``2**logt`` steps of a random walk on the affinity graph.

    ``scores``: ``[K, h, w]`` (K channels, background included). ``features``: ``[C, h, w]``
    on the same grid and device. Returns ``[K, h, w]`` in the dtype of ``scores``. A batch of
    images of one size, ``scores [B, K, h, w]`` with ``features [B, C, h, w]``, returns
    ``[B, K, h, w]``, each image walked on its own graph.

    Nodes are the ``N = h*w`` grid points; every pair ``i != j`` with
    ``dy^2 + dx^2 < radius^2`` is an edge (borders included), plus a self-loop.
    ``a_ij = exp(-mean_c |f_ci - f_cj|)``, ``a_ii = 1``, ``A = a**beta``, ``T = A D^-1``
    (``d_j`` = column sums) and the result is ``scores_flat [K, N] @ T^(2^logt)``.

    ``T`` is never formed densely: its transpose ``D^-1 A`` has one row per pixel with at
    most ``len(disk)`` (69 for ``radius = 5``) entries, and each of the ``2**logt`` steps is one
    ``embedding_bag`` over those rows: every pixel's new ``[K]`` scores are the weighted sum of
    its neighbours' rows, so memory is linear in ``N``. Computation is float64 when either
    input is float64, float32 otherwise.

    ``backend``: "torch" (the above), "native" (float32 on the CPU only: a C kernel,
    ``random_walk.c``, that steps on a zero-padded score grid, each neighbour a constant
    offset; built on first use, see ``ops.native``) or "auto" (native where it applies and
    a C compiler is at hand, torch otherwise). Both give the same walk up to float rounding.
    """
    batched = _check(scores, features, radius, logt)
    if not batched:
        scores, features = scores[None], features[None]
    dtype = torch.float64 if torch.float64 in (scores.dtype, features.dtype) else torch.float32
    kernels = _native_kernels(backend, dtype, scores.device)
    if kernels is not None:
        out = _native_walk(kernels, scores.float(), features.float(), radius, beta, logt)
        out = out.to(scores.dtype)
        return out if batched else out[0]
    b, k, h, w = scores.shape

    columns, starts, values = _transition_rows(features.to(dtype), radius, beta)
    state = _score_rows(scores.to(dtype))
    for _ in range(2**logt):
        # s <- D^-1 A s == (s^T T)^T: each row gathers its neighbours' rows, weighted
        state = F.embedding_bag(columns, state, starts, mode="sum", per_sample_weights=values)
    out = state[:, :k].reshape(b, h, w, k).permute(0, 3, 1, 2)
    out = out.to(scores.dtype).contiguous()
    return out if batched else out[0]


def _native_kernels(backend: str, dtype: torch.dtype, device: torch.device) -> ctypes.CDLL | None:
    """The native kernels if ``backend`` asks for them (and they apply), else None."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    applies = device.type == "cpu" and dtype == torch.float32
    if backend == "torch" or (backend == "auto" and not applies):
        return None
    if not applies:
        raise ValueError(f"the native walk is float32 on the CPU, got {dtype} on {device}")
    kernels = native.library("random_walk")
    if kernels is None and backend == "native":
        raise RuntimeError("the native walk could not be built: no working C compiler "
                           "(set CC to one, or use backend='torch')")
    return kernels


def _native_walk(kernels: ctypes.CDLL, scores: Tensor, features: Tensor, radius: int, beta: float,
                 logt: int) -> Tensor:
    """``random_walk`` of float32 CPU ``scores [B, K, h, w]`` on ``features [B, C, h, w]``
    by the C kernels: each image's rows of ``D^-1 A`` ``[h, w, len(disk)]``, then its
    scores walked in turns of at most ``_NATIVE_COLUMNS`` columns on a zero-padded grid."""
    b, k, h, w = scores.shape
    c = features.shape[1]
    disk = _disk(radius)
    dy, dx = (torch.tensor(side, dtype=torch.int32) for side in zip(*disk, strict=True))
    pad = max(abs(off) for off in dy.tolist() + dx.tolist())
    threads = max(1, min(torch.get_num_threads(), h * w // _NATIVE_PIXELS_PER_THREAD))
    out = torch.empty(b, k, h, w)
    for i in range(b):
        # named: a temporary's memory would be freed before the kernel reads it
        image_features = features[i].contiguous()
        rows = torch.zeros(h, w, len(disk))
        if kernels.wsss_transition_rows(_pointer(image_features), _pointer(rows),
                                        _pointer(dy), _pointer(dx), len(disk), h, w, c,
                                        ctypes.c_float(-beta / c), threads):
            raise MemoryError("out of memory for the walk's distances")
        for k0 in range(0, k, _NATIVE_COLUMNS):
            part = scores[i, k0 : k0 + _NATIVE_COLUMNS]
            width = _padded_width(part.shape[0])
            grids = torch.zeros(2, h + 2 * pad, w + 2 * pad, width)
            inside = (slice(pad, pad + h), slice(pad, pad + w), slice(0, part.shape[0]))
            grids[0][inside] = part.permute(1, 2, 0)
            which = kernels.wsss_walk(_pointer(grids[0]), _pointer(grids[1]), _pointer(rows),
                                      _pointer(dy), _pointer(dx), len(disk), h, w, pad, width,
                                      2**logt, threads)
            if which not in (0, 1):
                raise RuntimeError(f"the native walk does not take {width} score columns")
            out[i, k0 : k0 + part.shape[0]] = grids[which][inside].permute(2, 0, 1)
    return out


def _padded_width(k: int) -> int:
    """``k`` score columns rounded up to a multiple of ``_COLUMN_MULTIPLE``."""
    return -(-k // _COLUMN_MULTIPLE) * _COLUMN_MULTIPLE


def _pointer(tensor: Tensor) -> ctypes.c_void_p:
    """A contiguous tensor's data as a C pointer (the caller keeps the tensor alive)."""
    return ctypes.c_void_p(tensor.data_ptr())


def _check(scores: Tensor, features: Tensor, radius: int, logt: int) -> bool:
    """Raise ValueError on inputs ``random_walk`` does not accept; True if they are batched."""
    if scores.ndim != features.ndim or scores.ndim not in (3, 4):
        raise ValueError(
            f"scores must be [K, h, w] and features [C, h, w] (or [B, K, h, w] and "
            f"[B, C, h, w]), got shapes {tuple(scores.shape)} and {tuple(features.shape)}"
        )
    if scores.shape[-2:] != features.shape[-2:]:
        raise ValueError(
            f"scores grid {tuple(scores.shape[-2:])} != features grid {tuple(features.shape[-2:])}"
        )
    if scores.ndim == 4 and scores.shape[0] != features.shape[0]:
        raise ValueError(f"scores batch {scores.shape[0]} != features batch {features.shape[0]}")
    if scores.device != features.device:
        raise ValueError(f"scores on {scores.device} but features on {features.device}")
    if features.shape[-3] < 1 or scores.shape[-2:].numel() < 1 or scores.shape[:-3].numel() < 1:
        raise ValueError(
            f"features need a channel, the grid a pixel and the batch an image, got shapes "
            f"{tuple(scores.shape)} and {tuple(features.shape)}"
        )
    if radius < 1:
        raise ValueError(f"radius must be >= 1, got {radius}")
    if logt < 0:
        raise ValueError(f"logt must be >= 0, got {logt}")
    return scores.ndim == 4


def _score_rows(scores: Tensor) -> Tensor:
    """``[B, K, h, w]`` -> ``[B*h*w, K']``: one row per node, zero-padded to ``K'`` columns."""
    b, k, h, w = scores.shape
    width = _padded_width(k)
    rows = scores.new_zeros(b * h * w, width)
    rows[:, :k] = scores.permute(0, 2, 3, 1).reshape(b * h * w, k)
    return rows


def _transition_rows(features: Tensor, radius: int, beta: float) -> tuple[Tensor, Tensor, Tensor]:
    """``D^-1 A`` of every image as the rows of one block-diagonal sparse matrix.

    ``features``: ``[B, C, h, w]``; node ``i = b*h*w + y*w + x`` is pixel ``(y, x)`` of image
    ``b``. Returns ``(columns [nnz], starts [B*h*w], values [nnz])``: row ``i`` holds
    ``values[starts[i]:starts[i+1]] = A_ij / d_i`` at ``columns`` ``j``, its neighbours inside
    the grid (self included) in increasing order. Entries whose affinity underflowed to 0 are
    left out, which changes no product. Indices are int32 where they fit.
    """
    weight = _neighbour_weights(features, radius, beta)
    b, h, w, m = weight.shape
    nodes = b * h * w
    device = features.device
    weight = weight.view(nodes, m)
    weight /= weight.sum(1, keepdim=True)
    # one flat index of the kept entries serves both values and columns: boolean indexing
    # of each would build a [nnz, 2] int64 index twice, the largest temporary here
    keep = weight != 0
    counts = keep.sum(1)
    kept = keep.view(-1).nonzero().squeeze(1)
    del keep
    values = weight.view(-1)[kept]
    del weight
    # int32 indices: smaller, and the gather kernels are at least as fast with them
    index_dtype = torch.int32 if nodes * m < 2**31 else torch.int64
    disk = _disk(radius)
    shifts = torch.tensor([dy * w + dx for dy, dx in disk], dtype=index_dtype, device=device)
    columns = (torch.arange(nodes, dtype=index_dtype, device=device)[:, None] + shifts).view(-1)
    columns = columns[kept]
    del kept
    starts = torch.zeros(nodes, dtype=index_dtype, device=device)
    starts[1:] = torch.cumsum(counts[:-1], 0)
    return columns, starts, values


def _disk(radius: int) -> list[tuple[int, int]]:
    """Every offset ``(dy, dx)`` with ``dy^2 + dx^2 < radius^2``, self included, sorted.

    Lexicographic ``(dy, dx)`` order == increasing flat column ``dy*w + dx`` within a row.
    """
    half = affinity_offsets(radius)
    return sorted(half + [(0, 0)] + [(-dy, -dx) for dy, dx in half])


def _neighbour_weights(features: Tensor, radius: int, beta: float) -> Tensor:
    """``A_ij`` of each pixel ``i`` and its neighbours ``j``: ``[B, h, w, len(disk)]``.

    ``features``: ``[B, C, h, w]``. Slot ``m`` of pixel ``(y, x)`` pairs it with
    ``(y, x) + disk[m]``; slots outside the grid are 0, the self slot 1.
    """
    b, c, h, w = features.shape
    disk = _disk(radius)
    slot = {off: m for m, off in enumerate(disk)}
    pairs = [(dy, dx) for dy, dx in affinity_offsets(radius) if dy < h and abs(dx) < w]
    shifts = [dy * w + dx for dy, dx in pairs]
    dists = _l1_distances(features.reshape(b, c, h * w), shifts)
    weight = features.new_zeros(b, h, w, len(disk))
    weight[..., slot[(0, 0)]] = 1
    for (dy, dx), shift, dist in zip(pairs, shifts, dists, strict=True):
        # p = (y, x) in [ys, xs] has its neighbour p + (dy, dx) in [yt, xt]; dy >= 0 always
        ys, xs = slice(0, h - dy), slice(max(0, -dx), w - max(0, dx))
        yt, xt = slice(dy, h), slice(max(0, dx), w - max(0, -dx))
        # exp(-beta * mean) == exp(-mean) ** beta, with one rounding instead of a power's
        aff = torch.exp(dist.mul_(-beta / c))
        # back on the grid; the pairs that wrapped around a row end fall outside [ys, xs]
        aff = F.pad(aff, (0, shift)).view(b, h, w)[:, ys, xs]
        weight[:, ys, xs, slot[(dy, dx)]] = aff
        weight[:, yt, xt, slot[(-dy, -dx)]] = aff
    return weight


def _l1_distances(flat: Tensor, shifts: list[int]) -> list[Tensor]:
    """``sum_c |f[b, c, p] - f[b, c, p + shift]|`` for ``p < n - shift``, for each shift.

    ``flat``: ``[B, C, n]`` (pixels flattened row-major), every ``0 < shift < n``. Returns one
    ``[B, n - shift]`` tensor per shift. Flat shifts keep the slices contiguous along the
    pixels; the few pairs that wrap around a row end are computed and dropped by the caller.
    """
    b, c, n = flat.shape
    chunk = max(1, _CHUNK_ELEMENTS // (b * n))
    dists = [flat.new_zeros(b, n - shift) for shift in shifts]
    for c0 in range(0, c, chunk):
        # channels outer: each chunk serves every shift while it is in cache (1.7x faster
        # than shifts outer on a 125 x 94 grid with C = 448, where f does not fit in cache)
        part = flat[:, c0 : c0 + chunk]
        for shift, dist in zip(shifts, dists, strict=True):
            dist += (part[:, :, : n - shift] - part[:, :, shift:]).abs_().sum(1)
    return dists
