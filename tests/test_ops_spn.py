"""``ops.spn_propagate`` / ``ops.normalize_gates`` / ``ops.spn_gate_targets`` / ``ops.superpixel_regions``.

Checked by hand and against a dense linear-map reference of the four SPN scans.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsss_cli import ops

# (dy, dx) of the previous-line neighbours for gates 0, 1, 2 of directions 0..3 (the documented
# geometry: top->bottom, bottom->top, left->right, right->left; gate 0 at the lower coordinate)
NEIGHBOURS = [
    [(-1, -1), (-1, 0), (-1, 1)],
    [(1, -1), (1, 0), (1, 1)],
    [(-1, -1), (0, -1), (1, -1)],
    [(-1, 1), (0, 1), (1, 1)],
]


def _only_direction(d: int, gate: tuple[float, float, float], k: int, h: int, w: int) -> torch.Tensor:
    """Gates ``[1, 4, 3, k, h, w]``: ``gate`` everywhere in direction ``d``; the others carry the
    zero border unchanged (gates ``(0, 1, 0)``), so they output 0 and lose every max to ``d``
    on non-negative inputs."""
    gates = torch.zeros(1, 4, 3, k, h, w, dtype=torch.float64)
    gates[:, :, 1] = 1.0
    gates[0, d] = torch.tensor(gate, dtype=torch.float64).view(3, 1, 1, 1)
    return gates


def _dense_reference(x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    """Each scan as the explicit map ``h = (I - P)^-1 diag(1 - sum g) x`` over all pixels."""
    b, k, h, w = x.shape
    g = gates / gates.abs().sum(2, keepdim=True).clamp_min(1)
    n = h * w
    out = torch.full_like(x, -torch.inf)
    for bi in range(b):
        for ki in range(k):
            for d in range(4):
                prop = torch.zeros(n, n, dtype=x.dtype)
                keep = torch.zeros(n, dtype=x.dtype)
                for y in range(h):
                    for xx in range(w):
                        p = y * w + xx
                        keep[p] = 1 - g[bi, d, :, ki, y, xx].sum()
                        for j, (dy, dx) in enumerate(NEIGHBOURS[d]):
                            if 0 <= y + dy < h and 0 <= xx + dx < w:
                                prop[p, (y + dy) * w + xx + dx] = g[bi, d, j, ki, y, xx]
                hidden = torch.linalg.solve(torch.eye(n, dtype=x.dtype) - prop, keep * x[bi, ki].flatten())
                out[bi, ki] = torch.maximum(out[bi, ki], hidden.view(h, w))
    return out


def test_spn_top_to_bottom_by_hand():
    x = torch.tensor([[1.0, 2.0], [3.0, 0.0], [0.0, 4.0]], dtype=torch.float64).view(1, 1, 3, 2)
    # g = (0.2, 0.5, 0.1): the input keeps weight 1 - 0.8 = 0.2
    got = ops.spn_propagate(x, _only_direction(0, (0.2, 0.5, 0.1), 1, 3, 2))
    want = torch.tensor(
        [
            [0.2 * 1, 0.2 * 2],  # first row: zero hidden state above
            [0.2 * 3 + 0.5 * 0.2 + 0.1 * 0.4, 0.2 * 0 + 0.2 * 0.2 + 0.5 * 0.4],  # 0.74, 0.24
            [0.2 * 0 + 0.5 * 0.74 + 0.1 * 0.24, 0.2 * 4 + 0.2 * 0.74 + 0.5 * 0.24],  # 0.394, 1.068
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(got, want.view(1, 1, 3, 2))
    torch.testing.assert_close(got[0, 0, 2], torch.tensor([0.394, 1.068], dtype=torch.float64))


def test_spn_right_to_left_by_hand():
    # gate 0 must read the neighbour at the lower y (above), gate 2 the one below, in image terms
    x = torch.tensor([[4.0, 0.0, 8.0], [0.0, 4.0, 0.0]], dtype=torch.float64).view(1, 1, 2, 3)
    got = ops.spn_propagate(x, _only_direction(3, (0.5, 0.0, 0.25), 1, 2, 3))
    want = torch.tensor(
        [
            # column 2 first: 0.25 * (8, 0) = (2, 0)
            # column 1: y=0: 0.25*0 + 0.25*0 = 0; y=1: 0.25*4 + 0.5*2 = 2
            # column 0: y=0: 0.25*4 + 0.25*2 = 1.5; y=1: 0.25*0 + 0.5*0 = 0
            [1.5, 0.0, 2.0],
            [0.0, 2.0, 0.0],
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(got, want.view(1, 1, 2, 3))


def test_spn_matches_dense_reference_all_directions():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 2, 4, 5, generator=gen, dtype=torch.float64)
    # magnitudes around 1 put some pixels above and some below the normalisation threshold
    gates = 0.6 * torch.randn(2, 4, 3, 2, 4, 5, generator=gen, dtype=torch.float64)
    sums = gates.abs().sum(2)
    assert (sums > 1).any() and (sums < 1).any()
    torch.testing.assert_close(ops.spn_propagate(x, gates), _dense_reference(x, gates))
    for d in range(4):
        one = _only_direction(d, (0.0, 1.0, 0.0), 2, 4, 5).expand(2, -1, -1, -1, -1, -1).clone()
        one[:, d] = gates[:, d]
        # a positive input makes the zero outputs of the other directions lose every max
        pos = x.abs() + 0.1
        torch.testing.assert_close(ops.spn_propagate(pos, one), _dense_reference(pos, one).clamp_min(0))


def test_spn_zero_gates_return_input():
    x = torch.randn(2, 3, 5, 6)
    assert torch.equal(ops.spn_propagate(x, torch.zeros(2, 4, 3, 3, 5, 6)), x)


def test_normalize_gates():
    # two pixels: gates (0.2, -0.3, 0.1) and (3, -1, 0), in every direction
    pixels = torch.tensor([[0.2, -0.3, 0.1], [3.0, -1.0, 0.0]])
    gates = pixels.T.reshape(1, 1, 3, 1, 1, 2).repeat(1, 4, 1, 1, 1, 1)
    got = ops.normalize_gates(gates)
    torch.testing.assert_close(got[0, 2, :, 0, 0, 0], torch.tensor([0.2, -0.3, 0.1]))  # sum 0.6 kept
    torch.testing.assert_close(got[0, 2, :, 0, 0, 1], torch.tensor([0.75, -0.25, 0.0]))  # / 4
    with pytest.raises(ValueError):
        ops.normalize_gates(torch.zeros(1, 4, 2, 1, 1, 1))


def _raw_scan_top_to_bottom(x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    """Direction 0 without normalisation, ``x`` ``[H, W]``, ``gates`` ``[3, H, W]``."""
    prev = torch.zeros_like(x[0])
    for t in range(x.shape[0]):
        low = torch.cat([prev.new_zeros(1), prev[:-1]])
        high = torch.cat([prev[1:], prev.new_zeros(1)])
        g = gates[:, t]
        prev = (1 - g.sum(0)) * x[t] + g[0] * low + g[1] * prev + g[2] * high
    return prev


def test_spn_normalisation_keeps_long_scans_stable():
    gen = torch.Generator().manual_seed(1)
    x = 0.5 + 0.5 * torch.rand(1, 1, 64, 64, generator=gen, dtype=torch.float64)
    gates = 5 * torch.rand(1, 4, 3, 1, 64, 64, generator=gen, dtype=torch.float64)
    # non-negative normalised gates make every h a convex combination of inputs and zeros
    out = ops.spn_propagate(x, gates)
    assert torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= x.max()
    assert out.max() > 0.1
    # signed gates: |h_t| <= 2 max|x| + max|h_{t-1}|, so at most 2 * 64 * max|x|
    signed = gates * torch.where(torch.rand(gates.shape, generator=gen) < 0.5, -1.0, 1.0).double()
    assert ops.spn_propagate(x, signed).abs().max() <= 2 * 64 * x.abs().max()
    # the same raw gates without normalisation blow up
    assert _raw_scan_top_to_bottom(x[0, 0], gates[0, 0, :, 0]).abs().max() > 1e10


@pytest.mark.parametrize("scale", [0.2, 3.0], ids=["below-threshold", "normalised"])
def test_spn_gradcheck(scale):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(1, 2, 3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    # magnitudes in [0.5, 1] * scale keep every gate sum clear of the kink at 1 and of |g| = 0
    mag = 0.5 + 0.5 * torch.rand(1, 4, 3, 2, 3, 4, generator=gen, dtype=torch.float64)
    sign = torch.where(torch.rand(mag.shape, generator=gen) < 0.5, -1.0, 1.0).double()
    gates = (scale * mag * sign).requires_grad_()
    sums = gates.detach().abs().sum(2)
    assert ((sums - 1).abs() > 0.05).all()
    assert torch.autograd.gradcheck(ops.spn_propagate, (x, gates))


def test_spn_rejects_bad_shapes():
    with pytest.raises(ValueError):
        ops.spn_propagate(torch.zeros(1, 2, 3, 4), torch.zeros(1, 4, 3, 2, 3, 5))
    with pytest.raises(ValueError):
        ops.spn_propagate(torch.zeros(2, 3, 4), torch.zeros(1, 4, 3, 2, 3, 4))


def test_spn_gate_targets_by_hand():
    sp = torch.tensor([[[0, 0, 1], [0, 1, 1], [0, 1, 1]]])
    got = ops.spn_gate_targets(sp)
    assert got.shape == (1, 4, 3, 3, 3) and got.dtype == torch.float32

    def at(y: int, x: int) -> list[list[float]]:
        return got[0, :, :, y, x].tolist()

    third = 1 / 3
    # centre (id 1): above (0, 0, 1); below (0, 1, 1); left column all 0; right column all 1
    torch.testing.assert_close(
        torch.tensor(at(1, 1)), torch.tensor([[0, 0, 1], [0, 0.5, 0.5], [0, 0, 0], [third] * 3])
    )
    # top-left (id 0): nothing above or to the left; below (out, 0, 1); right column (out, 0, 1)
    torch.testing.assert_close(
        torch.tensor(at(0, 0)), torch.tensor([[0.0, 0, 0], [0, 1, 0], [0, 0, 0], [0, 1, 0]])
    )
    # bottom-left (id 0): above (out, 0, 1); right column (1, 1, out) -> no match
    torch.testing.assert_close(
        torch.tensor(at(2, 0)), torch.tensor([[0.0, 1, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]])
    )
    # left-middle (id 0): above (out, 0, 0); below (out, 0, 1); right column (0, 1, 1) -> top only
    torch.testing.assert_close(
        torch.tensor(at(1, 0)), torch.tensor([[0.0, 0.5, 0.5], [0, 1, 0], [0, 0, 0], [1, 0, 0]])
    )
    # right-middle (id 1): left column (0, 1, 1); right column outside
    torch.testing.assert_close(
        torch.tensor(at(1, 2)), torch.tensor([[0.0, 1, 0], [0.5, 0.5, 0], [0, 0.5, 0.5], [0, 0, 0]])
    )


def test_spn_gate_targets_sum_to_one_or_zero():
    gen = torch.Generator().manual_seed(3)
    sp = torch.randint(0, 3, (2, 6, 7), generator=gen)
    sums = ops.spn_gate_targets(sp).sum(2)
    assert torch.all(((sums - 1).abs() < 1e-6) | (sums == 0))
    assert (sums == 0).any() and (sums > 0).any()
    # the same geometry as the dense propagation reference, pixel by pixel
    targets = ops.spn_gate_targets(sp)
    _, h, w = sp.shape
    for bi, d, y, x in np.ndindex(2, 4, h, w):
        match = [0 <= y + dy < h and 0 <= x + dx < w and bool(sp[bi, y + dy, x + dx] == sp[bi, y, x])
                 for dy, dx in NEIGHBOURS[d]]
        want = [m / max(1, sum(match)) for m in match]
        torch.testing.assert_close(targets[bi, d, :, y, x], torch.tensor(want))
    # one superpixel per pixel: no neighbour ever matches
    assert not ops.spn_gate_targets(torch.arange(12).view(1, 3, 4)).any()


def test_superpixel_regions_by_hand():
    sp = np.array([[0, 0, 0, 0, 0], [1, 1, 1, 1, 2], [2, 2, 2, 2, 2]])
    labels = np.array([[1, 1, 0, 1, 1], [2, 2, 0, 2, 0], [0, 0, 0, 0, 0]])
    rng = np.random.default_rng(4)
    probs = (np.eye(3)[labels].transpose(2, 0, 1) + 0.4 * rng.random((3, 3, 5))).astype(np.float32)
    assert (probs.argmax(0) == labels).all()
    # superpixel 0: 4/5 = 80 % class 1 passes; 1: 3/4 = 75 % class 2 fails; 2: pure class 0
    got = ops.superpixel_regions(probs, sp)
    assert got.dtype == np.int64
    assert got.tolist() == [1, -1, 0]
    assert ops.superpixel_regions(probs, sp, ratio=0.75).tolist() == [1, 2, 0]
    assert ops.superpixel_regions(probs, sp, ratio=0.81).tolist() == [-1, -1, 0]
    # an id without pixels is -1
    assert ops.superpixel_regions(probs, np.where(sp == 2, 3, sp)).tolist() == [1, -1, -1, 0]


@pytest.mark.parametrize("ratio", [0.5, 0.3, 1.01])
def test_superpixel_regions_rejects_ratio(ratio):
    with pytest.raises(ValueError):
        ops.superpixel_regions(np.zeros((2, 2, 2)), np.zeros((2, 2), dtype=np.int64), ratio=ratio)
