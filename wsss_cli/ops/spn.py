"""Spatial propagation network: the pairwise module of IAL ("iterative affinity learning").

Four directional three-way linear scans (Liu et al., "Learning Affinity via Spatial Propagation
Networks", NIPS 2017), merged by an element-wise max, plus the superpixel targets of IAL's
gate smoothness term.

Conventions shared by every function here (``gates`` is ``[B, 4, 3, K, H, W]``):

- direction ``d`` (dim 1): 0 top->bottom, 1 bottom->top (the scan runs over rows, a line is a
  row), 2 left->right, 3 right->left (the scan runs over columns, a line is a column);
- gate ``j`` (dim 2) of pixel ``(y, x)`` weighs one of the three neighbours on the line the scan
  visited just before: 0 the neighbour at the lower coordinate along the line, 1 the one
  straight behind, 2 the one at the higher coordinate, always in image coordinates. So for
  ``d = 0`` they are ``(y-1, x-1), (y-1, x), (y-1, x+1)``; ``d = 1``: ``(y+1, x-1), (y+1, x),
  (y+1, x+1)``; ``d = 2``: ``(y-1, x-1), (y, x-1), (y+1, x-1)``; ``d = 3``: ``(y-1, x+1),
  (y, x+1), (y+1, x+1)``;
- a neighbour outside the image holds a zero hidden state (SPN's reference kernel reads zeros
  there), so the first line of a scan is ``h = (1 - g0 - g1 - g2) x``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# (dy, dx) of the three previous-line neighbours of every direction, in gate order
_NEIGHBOURS = (
    ((-1, -1), (-1, 0), (-1, 1)),
    ((1, -1), (1, 0), (1, 1)),
    ((-1, -1), (0, -1), (1, -1)),
    ((-1, 1), (0, 1), (1, 1)),
)


def _check_gates(gates: Tensor) -> None:
    if gates.ndim != 6 or tuple(gates.shape[1:3]) != (4, 3):
        raise ValueError(f"gates must be [B, 4, 3, K, H, W], got {tuple(gates.shape)}")


def normalize_gates(gates: Tensor) -> Tensor:
    """SPN's stability condition: the three gates of a pixel and direction scaled to |sum| <= 1.

    ``gates``: ``[B, 4, 3, K, H, W]`` raw gates. Where ``|g0| + |g1| + |g2| > 1`` the three are
    divided by that sum; elsewhere they are unchanged. Returns ``[B, 4, 3, K, H, W]`` with
    gradient (the map is continuous, with a kink where the sum is 1).
    """
    _check_gates(gates)
    # dividing by max(1, sum) leaves small gates untouched and bounds the recurrence's norm by 1
    return gates / gates.abs().sum(dim=2, keepdim=True).clamp_min(1)


def _scan(x: Tensor, gates: Tensor) -> Tensor:
    """One top->bottom scan. ``x``: ``[N, K, T, L]``; ``gates``: ``[N, 3, K, T, L]`` normalised.

    Returns the hidden states ``[N, K, T, L]``.
    """
    g_low, g_mid, g_high = gates.unbind(1)
    # the input term has no recurrence, so it is computed for all lines at once
    drive = ((1 - g_low - g_mid - g_high) * x).unbind(2)
    g_low, g_mid, g_high = g_low.unbind(2), g_mid.unbind(2), g_high.unbind(2)
    h = drive[0]
    lines = [h]
    for t in range(1, len(drive)):
        # shifting with a zero pad makes the out-of-image neighbours a zero hidden state
        from_low = F.pad(h[..., :-1], (1, 0))
        from_high = F.pad(h[..., 1:], (0, 1))
        h = drive[t] + g_low[t] * from_low + g_mid[t] * h + g_high[t] * from_high
        lines.append(h)
    # stacking (not writing into a buffer) keeps every line in the autograd graph
    return torch.stack(lines, dim=2)


def spn_propagate(x: Tensor, gates: Tensor) -> Tensor:
    """The four-direction spatial propagation of ``x``, merged by an element-wise max.

    ``x``: ``[B, K, H, W]`` float; ``gates``: ``[B, 4, 3, K, H, W]`` raw gates (direction, gate,
    channel, position; see the module docstring for their order and geometry). The gates are
    first passed through ``normalize_gates``. For each direction, at pixel ``p`` with gates
    ``g0, g1, g2`` and previous-line neighbours ``n0, n1, n2`` (lower, behind, higher along the
    line), ``h(p) = (1 - g0 - g1 - g2) x(p) + g0 h(n0) + g1 h(n1) + g2 h(n2)``, where ``h`` of an
    out-of-image neighbour is 0. Each channel is scanned on its own. Returns ``[B, K, H, W]``,
    the max over the four directions' ``h``, differentiable in ``x`` and ``gates``.

    Memory is linear in pixels: a Python loop over lines with whole-line tensor ops (``H`` steps
    for the two vertical scans together, ``W`` for the two horizontal ones).
    """
    if x.ndim != 4:
        raise ValueError(f"x must be [B, K, H, W], got {tuple(x.shape)}")
    _check_gates(gates)
    b, k, h, w = x.shape
    if tuple(gates.shape) != (b, 4, 3, k, h, w):
        raise ValueError(f"gates must be {(b, 4, 3, k, h, w)} for x {tuple(x.shape)}, "
                         f"got {tuple(gates.shape)}")
    g = normalize_gates(gates)
    # flipping only the scan axis turns a reversed scan into a forward one; the line axis keeps
    # its orientation, so gate 0 still points at the lower coordinate and needs no swap
    vertical = _scan(torch.cat([x, x.flip(-2)]), torch.cat([g[:, 0], g[:, 1].flip(-2)]))
    down, up = vertical[:b], vertical[b:].flip(-2)
    # transposing makes columns the lines; gate 0 then points at the lower y, as documented
    xt, gt = x.transpose(-1, -2), g[:, 2:].transpose(-1, -2)
    horizontal = _scan(torch.cat([xt, xt.flip(-2)]), torch.cat([gt[:, 0], gt[:, 1].flip(-2)]))
    right, left = horizontal[:b].transpose(-1, -2), horizontal[b:].flip(-2).transpose(-1, -2)
    return torch.stack([down, up, right, left]).amax(0)


def spn_gate_targets(superpixels: Tensor) -> Tensor:
    """IAL's superpixel gate targets ``G_s`` for the smoothness term ``||G - G_s||^2``.

    ``superpixels``: ``[B, H, W]`` integer superpixel ids. For every pixel, direction and gate
    (same geometry as ``spn_propagate``), the indicator "that previous-line neighbour lies in
    the image and in the pixel's superpixel", divided by the number of such neighbours (at
    least 1). So the three targets of a pixel and direction sum to 1 when any neighbour shares
    its superpixel and are all 0 otherwise. Returns float32 ``[B, 4, 3, H, W]`` (compare with
    ``normalize_gates(gates)``, broadcasting over ``K``), without gradient.
    """
    if superpixels.ndim != 3 or superpixels.is_floating_point():
        raise ValueError(f"superpixels must be integer [B, H, W], got {superpixels.dtype} "
                         f"{tuple(superpixels.shape)}")
    b, h, w = superpixels.shape
    # an id below every real id marks the border, so out-of-image neighbours never match
    border = int(superpixels.min()) - 1 if superpixels.numel() else -1
    padded = superpixels.new_full((b, h + 2, w + 2), border)
    padded[:, 1:-1, 1:-1] = superpixels
    same = torch.stack([
        torch.stack([padded[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] == superpixels
                     for dy, dx in direction], dim=1)
        for direction in _NEIGHBOURS
    ], dim=1).float()
    return same / same.sum(dim=2, keepdim=True).clamp_min(1)
