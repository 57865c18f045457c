"""Stochastic gate mixing deep and shallow features (1-stage)."""

from __future__ import annotations

import torch
from torch import Tensor


def stochastic_gate(
    deep: Tensor, shallow: Tensor, psi: float = 0.3, training: bool = True
) -> Tensor:
    """Mix ``deep`` and ``shallow`` features (same shape, any shape, same device).

    Training: per element a Bernoulli ``r`` with ``P(r = 1) = 1 - psi`` (torch's global RNG
    of the inputs' device) gives ``(deep - psi * shallow) / (1 - psi)`` where ``r = 1`` and
    ``shallow`` where ``r = 0``, so the expectation is ``deep``. Inference:
    ``(1 - psi) * deep + psi * shallow``. Returns a tensor of the inputs' shape.
    """
    if deep.shape != shallow.shape:
        raise ValueError(
            f"deep and shallow must have the same shape, got {tuple(deep.shape)} "
            f"and {tuple(shallow.shape)}"
        )
    if not 0 <= psi <= 1 or (training and psi == 1):
        raise ValueError(f"psi must be in [0, 1) for training and [0, 1] for inference, got {psi}")
    if not training:
        return (1 - psi) * deep + psi * shallow
    keep_deep = torch.empty_like(deep).bernoulli_(1 - psi).bool()
    # where() instead of r * a + (1 - r) * b: exactly one of the two values per element,
    # and a non-finite value in the branch not taken cannot leak into the result
    return torch.where(keep_deep, (deep - psi * shallow) / (1 - psi), shallow)
