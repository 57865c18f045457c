"""``ops.stochastic_gate`` against 1-stage-wseg's ``StochasticGate`` and its expectation."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_close, golden_cases, load_golden

from wsss_cli import ops


@pytest.mark.parametrize("path", golden_cases("stochastic_gate"), ids=lambda p: p.stem)
def test_stochastic_gate_golden(path):
    _, params, inputs, expected = load_golden(path)
    got = ops.stochastic_gate(**{k: torch.from_numpy(v) for k, v in inputs.items()}, **params)
    assert got.dtype == torch.float32
    assert_close(got.numpy(), expected["out"])


def _pair(shape, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)


def test_inference_formula():
    deep, shallow = _pair((3, 5, 7, 4), 0)
    got = ops.stochastic_gate(deep, shallow, psi=0.25, training=False)
    torch.testing.assert_close(got, 0.75 * deep + 0.25 * shallow)


def test_training_takes_one_of_two_values_with_probability_one_minus_psi():
    psi = 0.3
    deep, shallow = _pair((50, 40, 100), 1)
    torch.manual_seed(0)
    got = ops.stochastic_gate(deep, shallow, psi=psi)
    scaled = (deep - psi * shallow) / (1 - psi)
    is_deep, is_shallow = got == scaled, got == shallow
    assert (is_deep | is_shallow).all()
    # 200k draws: the standard error of the fraction is about 0.001
    assert abs(is_deep.double().mean().item() - (1 - psi)) < 0.01
    # both branches together: E = (1 - psi) * scaled + psi * shallow = deep
    torch.testing.assert_close((1 - psi) * scaled + psi * shallow, deep)


def test_training_expectation_is_deep():
    psi, draws = 0.4, 20000
    deep, shallow = _pair((16,), 2)
    torch.manual_seed(1)
    # every element of the expanded tensor gets its own draw
    got = ops.stochastic_gate(deep.expand(draws, 16), shallow.expand(draws, 16), psi=psi)
    spread = ((psi * (1 - psi)) ** 0.5) * ((deep - shallow) / (1 - psi)).abs()
    tolerance = 5 * spread / draws**0.5 + 1e-6
    assert ((got.mean(0) - deep).abs() <= tolerance).all()


def test_training_uses_the_global_rng():
    deep, shallow = _pair((4, 6, 6), 3)
    torch.manual_seed(7)
    first = ops.stochastic_gate(deep, shallow)
    second = ops.stochastic_gate(deep, shallow)
    torch.manual_seed(7)
    again = ops.stochastic_gate(deep, shallow)
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    assert not torch.equal(first, second)


def test_psi_zero_trains_on_deep_only():
    deep, shallow = _pair((2, 3, 4), 4)
    torch.testing.assert_close(ops.stochastic_gate(deep, shallow, psi=0.0), deep)


@pytest.mark.parametrize(("psi", "training"), [(1.0, True), (-0.1, False), (1.5, False)])
def test_rejects_bad_psi(psi, training):
    deep, shallow = _pair((2, 2), 5)
    with pytest.raises(ValueError, match="psi"):
        ops.stochastic_gate(deep, shallow, psi=psi, training=training)
