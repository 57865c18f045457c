"""A permutohedral lattice in PyTorch (Adams, Baek & Davis, Eurographics 2010).

Approximate Gaussian filtering in a d-dimensional feature space, done the way Krähenbühl's
``densecrf`` does it (so that a dense CRF built on it follows pydensecrf): the features are
elevated onto the hyperplane ``x_0 + ... + x_d = 0`` of ``Z^(d+1)``, every point splats its
value onto the d+1 vertices of its enclosing simplex with barycentric weights, the lattice
is blurred with ``[1/2, 1, 1/2]`` along each of the d+1 lattice directions, and the points
slice the result back with the same weights, times densecrf's ``alpha = 1 / (1 + 2^-d)``.
The features are expected already divided by the kernel's standard deviations. The filter
includes each point's own value (densecrf does not remove it either).

A lattice vertex is a key ``k`` in ``Z^d`` (its first d coordinates; the last one makes the
sum 0). All coordinates of a vertex are congruent mod d+1 to its remainder ``r``, so it is
stored as the integer code ``(d+1) * Q + r`` with ``Q`` the mixed-radix number of the
quotients ``k_i // (d+1)``; neighbours are then found by integer arithmetic on codes.
"""

from __future__ import annotations

import copy
import math
import warnings

import torch

# lattice codes are int64
_MAX_CODE = 2**63


class Permutohedral:
    """The lattice of one point set, built once and then applied to any number of value sets.

    ``features``: float ``[N, d]``; everything lives on the features' device. ``M`` below is
    the number of lattice vertices; row ``M`` of a lattice tensor is an always-zero row that
    stands for the vertices that do not exist.
    """

    def __init__(self, features: torch.Tensor):
        if features.ndim != 2 or features.shape[1] < 1 or features.shape[0] < 1:
            raise ValueError(f"features must be [N, d] with N, d >= 1, got shape {tuple(features.shape)}")
        self.n_points, self.dim = features.shape
        self.alpha = 1.0 / (1.0 + 2.0 ** (-self.dim))
        elevated = _elevate(features.float())
        rem0, rank = _enclosing_simplex(elevated)
        weights = _barycentric(elevated, rem0, rank)
        codes, strides = _vertex_codes(rem0, rank)
        # one sort gives the vertices (unique codes) and the splat's point order
        sorted_codes, order = codes.view(-1).sort(stable=True)
        self.codes, inverse, counts = torch.unique_consecutive(
            sorted_codes, return_inverse=True, return_counts=True
        )
        self.n_lattice = self.codes.numel()
        self.neighbours = self._blur_neighbours(strides)
        self.splat_matrix, self.slice_matrix = self._sparse_maps(order, inverse, counts, weights.view(-1))

    def _blur_neighbours(self, strides: torch.Tensor) -> torch.Tensor:
        """``[d+1, 2, M+1]`` int64: the two neighbours of every vertex along each lattice
        direction (``M`` where there is none, and for row ``M`` itself).

        Direction j < d moves key coordinate j by +d and the others by -1 (direction d: all
        by -1), and the opposite way; in codes that is ``Q +- stride_j`` with a carry of
        ``-+ sum(strides)`` when the remainder wraps around.
        """
        d1 = self.dim + 1
        quotient, remainder = self.codes.div(d1, rounding_mode="floor"), self.codes.remainder(d1)
        total = strides.sum()
        step = torch.cat([strides, strides.new_zeros(1)])
        down = (quotient - total * (remainder == 0)) * d1 + (remainder - 1).remainder(d1)
        up = (quotient + total * (remainder == d1 - 1)) * d1 + (remainder + 1).remainder(d1)
        pad = self.codes.new_full((1,), self.n_lattice)
        rows = []
        for j in range(d1):
            pair = [self._find(down + step[j] * d1), self._find(up - step[j] * d1)]
            rows.append(torch.stack([torch.cat([p, pad]) for p in pair]))
        return torch.stack(rows)

    def _find(self, codes: torch.Tensor) -> torch.Tensor:
        """Vertex index of each code ``[Q]`` -> ``[Q]`` int64, ``M`` for codes not in the lattice."""
        found = torch.searchsorted(self.codes, codes).clamp_(max=self.n_lattice - 1)
        return torch.where(self.codes[found] == codes, found, self.n_lattice)

    def _sparse_maps(
        self, order: torch.Tensor, inverse: torch.Tensor, counts: torch.Tensor, weights: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """CSR matrices of the splat ``[M+1, N]`` and of the slice ``[N, M+1]`` (with alpha),
        from the (point, vertex) pairs sorted by vertex: ``order`` (pair index), ``inverse``
        (vertex of each sorted pair) ``[N * (d+1)]``, ``counts`` ``[M]``; ``weights``
        ``[N * (d+1)]`` point-major. Sparse products beat index_add/gather of ``[N * (d+1), K]``
        rows by an order of magnitude."""
        n, d1, m1 = self.n_points, self.dim + 1, self.n_lattice + 1
        # int32 indices spare MKL / cuSPARSE a conversion at every product
        index = torch.int32 if n * d1 < 2**31 else torch.int64
        splat_rows = torch.cat([counts.new_zeros(1), counts.cumsum(0), counts.sum().view(1)])
        splat_cols = order.div(d1, rounding_mode="floor")
        vertex = torch.empty_like(inverse).scatter_(0, order, inverse)
        slice_rows = torch.arange(0, n * d1 + 1, d1, device=order.device)
        splat = _csr(splat_rows.to(index), splat_cols.to(index), weights[order], (m1, n))
        slice_ = _csr(slice_rows.to(index), vertex.to(index), weights * self.alpha, (n, m1))
        return splat, slice_

    def scaled(self, before: torch.Tensor, after: torch.Tensor) -> Permutohedral:
        """The same lattice filtering ``after * filter(before * values)``; ``before``, ``after``:
        ``[N]``. Folded into the sparse matrices, so it costs nothing per filtering."""
        out = copy.copy(self)
        splat, slice_ = self.splat_matrix, self.slice_matrix
        splat_cols = splat.col_indices()
        out.splat_matrix = _csr(
            splat.crow_indices(), splat_cols, splat.values() * before[splat_cols.long()], splat.shape
        )
        slice_values = (slice_.values().view(self.n_points, -1) * after.view(-1, 1)).view(-1)
        out.slice_matrix = _csr(slice_.crow_indices(), slice_.col_indices(), slice_values, slice_.shape)
        return out

    def filter(self, values: torch.Tensor, add_to: torch.Tensor | None = None) -> torch.Tensor:
        """Gaussian-filter ``values`` ``[N, K]`` over the points -> ``[N, K]`` float32;
        ``add_to`` (``[N, K]``) is added to the result in the slicing product."""
        if values.ndim != 2 or values.shape[0] != self.n_points:
            raise ValueError(f"values must be [{self.n_points}, K], got shape {tuple(values.shape)}")
        lattice = self.blur(self.splat(values.float()))
        if add_to is None:
            return self.slice(lattice)
        return torch.addmm(add_to, self.slice_matrix, lattice)

    def splat(self, values: torch.Tensor) -> torch.Tensor:
        """``[N, K]`` -> ``[M+1, K]``: the barycentric-weighted sums at the vertices."""
        return self.splat_matrix @ values

    def blur(self, lattice: torch.Tensor) -> torch.Tensor:
        """``[M+1, K]`` -> ``[M+1, K]``: ``[1/2, 1, 1/2]`` along lattice directions 0, ..., d in turn."""
        for n1, n2 in self.neighbours:
            pair_sum = lattice.index_select(0, n1).add_(lattice.index_select(0, n2))
            lattice = torch.add(lattice, pair_sum, alpha=0.5)
        return lattice

    def slice(self, lattice: torch.Tensor) -> torch.Tensor:
        """``[M+1, K]`` -> ``[N, K]``: barycentric interpolation at the points, times alpha."""
        return self.slice_matrix @ lattice


def _csr(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A CSR matrix from trusted indices, without the invariant check and torch's warnings about
    it (and about CSR being beta)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse (CSR tensor support is in beta|invariant checks)")
        return torch.sparse_csr_tensor(rows, cols, values, size, check_invariants=False)


def _elevate(features: torch.Tensor) -> torch.Tensor:
    """``[N, d]`` -> ``[N, d+1]`` on the hyperplane summing to 0, scaled so that the lattice
    blur has densecrf's standard deviation (``E`` of Adams et al., p. 5)."""
    d = features.shape[1]
    inv_std = math.sqrt(2.0 / 3.0) * (d + 1)
    scale = torch.tensor([inv_std / math.sqrt((i + 2) * (i + 1)) for i in range(d)], device=features.device)
    cf = features * scale.float()
    # suffix sums accumulated from the last feature, as densecrf's loop does
    suffix = cf.flip(1).cumsum(1).flip(1)
    tail = torch.cat([suffix[:, 1:], cf.new_zeros(cf.shape[0], 1)], 1)
    j = torch.arange(1, d + 1, device=features.device, dtype=cf.dtype)
    return torch.cat([suffix[:, :1], tail - j * cf], 1)


def _enclosing_simplex(elevated: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The nearest remainder-0 lattice point ``rem0`` ``[N, d+1]`` and the rank of each
    coordinate of the offset from it ``[N, d+1]`` (both int64), once the point is brought
    back onto the plane."""
    d1 = elevated.shape[1]
    down = torch.floor(elevated * (1.0 / d1)) * d1
    up = torch.ceil(elevated * (1.0 / d1)) * d1
    rem0 = torch.where(up - elevated < elevated - down, up, down)
    # rank 0 = largest offset; among equal offsets the earlier coordinate ranks first
    order = (elevated - rem0).sort(dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(d1, device=order.device).expand_as(order))
    rem0 = rem0.long()
    rank = rank + rem0.sum(1, keepdim=True).div(d1, rounding_mode="floor")
    wrap = (rank < 0).long() - (rank > d1 - 1).long()
    return rem0 + d1 * wrap, rank + d1 * wrap


def _barycentric(elevated: torch.Tensor, rem0: torch.Tensor, rank: torch.Tensor) -> torch.Tensor:
    """``[N, d+1]`` float32: the weight of each simplex vertex (vertex r has remainder r)."""
    d1 = elevated.shape[1]
    v = (elevated - rem0.float()) * (1.0 / d1)
    by_rank = torch.empty_like(v).scatter_(1, rank, v)
    # vertex r collects +v of the rank d-r coordinate and -v of the rank d-r+1 one
    weights = by_rank.flip(1).clone()
    weights[:, 1:] -= by_rank.flip(1)[:, :-1]
    weights[:, 0] = (weights[:, 0].double() + (1.0 - by_rank[:, 0].double())).float()
    return weights


def _vertex_codes(rem0: torch.Tensor, rank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes ``[N, d+1]`` of every point's simplex vertices (vertex r has remainder r), and
    the strides ``[d]`` of the quotients in the codes.

    Coordinate i of vertex r is ``rem0_i + r`` if ``rank_i <= d - r``, else
    ``rem0_i + r - (d+1)``: its quotient drops by one once r passes ``d - rank_i``.
    """
    d1 = rem0.shape[1]
    d = d1 - 1
    quotient = rem0[:, :d].div(d1, rounding_mode="floor")
    # the box holds the vertices (quotient - 1) and their neighbours (one more either side)
    low = quotient.amin(0) - 2
    radix = quotient.amax(0) + 2 - low
    if math.prod(radix.tolist()) * d1 >= _MAX_CODE:
        raise ValueError("features span too large a range for the lattice; use larger standard deviations")
    strides = torch.cat([radix.new_ones(1), radix[:-1].cumprod(0)])
    base = ((quotient - low) * strides).sum(1, keepdim=True)
    # stride of the coordinate of each rank; the last coordinate is not part of the key
    by_rank = torch.zeros_like(rank).scatter_(1, rank[:, :d], strides.expand(rank.shape[0], d))
    drop = torch.cat([by_rank.new_zeros(rank.shape[0], 1), by_rank.flip(1)[:, :-1].cumsum(1)], 1)
    r = torch.arange(d1, device=rem0.device)
    return (base - drop) * d1 + r, strides
