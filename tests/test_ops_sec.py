"""``ops.sec_seed_loss`` / ``ops.sec_expand_loss`` / ``ops.sec_constrain_loss`` against SEC and by hand."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import golden_cases, run_torch_golden

from wsss_cli import ops


@pytest.mark.parametrize("path", golden_cases("sec_seed_loss"), ids=lambda p: p.stem)
def test_sec_seed_loss_golden(path):
    run_torch_golden("sec_seed_loss", path)


@pytest.mark.parametrize("path", golden_cases("sec_expand_loss"), ids=lambda p: p.stem)
def test_sec_expand_loss_golden(path):
    run_torch_golden("sec_expand_loss", path)


@pytest.mark.parametrize("path", golden_cases("sec_constrain_loss"), ids=lambda p: p.stem)
def test_sec_constrain_loss_golden(path):
    run_torch_golden("sec_constrain_loss", path)


def _probs(b: int, k: int, h: int, w: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    """Softmax outputs ``[b, k, h, w]`` with SEC's ``+ 1e-4`` and renormalisation."""
    gen = torch.Generator().manual_seed(seed)
    p = torch.softmax(3 * torch.randn(b, k, h, w, generator=gen, dtype=dtype), 1) + 1e-4
    return p / p.sum(1, keepdim=True)


def test_sec_seed_loss_by_hand():
    # one image, background and one class over two pixels: pixel 0 seeded bg, pixel 1 the class
    probs = torch.tensor([[[[0.8, 0.3]], [[0.2, 0.7]]]])
    cues = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])
    got = ops.sec_seed_loss(probs, cues)
    assert got.shape == () and got.dtype == torch.float32
    torch.testing.assert_close(got, torch.tensor(-(math.log(0.8) + math.log(0.7)) / 2))


def test_sec_seed_loss_weighs_images_equally():
    probs = torch.tensor([[[[0.8, 0.3]], [[0.2, 0.7]]], [[[0.6, 0.9]], [[0.4, 0.1]]]], dtype=torch.float64)
    # image 0 has one seed, image 1 three (one pixel seeded twice): each is averaged on its own
    cues = torch.tensor([[[[1.0, 0.0]], [[0.0, 0.0]]], [[[1.0, 1.0]], [[1.0, 0.0]]]], dtype=torch.float64)
    got = ops.sec_seed_loss(probs, cues)
    image0 = -math.log(0.8)
    image1 = -(math.log(0.6) + math.log(0.9) + math.log(0.4)) / 3
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, torch.tensor((image0 + image1) / 2, dtype=torch.float64))


def _expand_reference(probs, labels, pool_fg, pool_bg):
    """The expand loss written out per image and class, with the pooling given as functions."""
    b, k = probs.shape[:2]
    first, middle, last = [], [], []
    for i in range(b):
        present = [c for c in range(1, k) if labels[i, c - 1] > 0.5]
        absent = [c for c in range(1, k) if labels[i, c - 1] <= 0.5]
        first.append(sum(torch.log(pool_fg(probs[i, c])) for c in present) / len(present))
        middle.append(sum(torch.log(1 - probs[i, c].max()) for c in absent) / len(absent) if absent else 0.0)
        last.append(torch.log(pool_bg(probs[i, 0])))
    return -(sum(first) + sum(middle) + sum(last)) / b


def test_sec_expand_loss_limits_are_max_and_mean_pooling():
    probs = _probs(3, 4, 5, 6, seed=0)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
    # q = 0: only the largest value counts (max pooling); q = 1: all equally (mean pooling)
    got = ops.sec_expand_loss(probs, labels, q_fg=0.0, q_bg=1.0)
    torch.testing.assert_close(got, _expand_reference(probs, labels, torch.max, torch.mean))
    # q_fg pools the classes, q_bg the background: swapping them changes the answer
    got = ops.sec_expand_loss(probs, labels, q_fg=1.0, q_bg=0.0)
    torch.testing.assert_close(got, _expand_reference(probs, labels, torch.mean, torch.max))
    # a tiny q is max pooling up to q
    got = ops.sec_expand_loss(probs, labels, q_fg=1e-9, q_bg=1e-9)
    torch.testing.assert_close(got, _expand_reference(probs, labels, torch.max, torch.max))


def test_sec_expand_loss_gwrp_by_hand():
    # background and one present class over three pixels: no absent class, so only GWRP counts
    fg = torch.tensor([0.2, 0.7, 0.5])
    probs = torch.stack([1 - fg, fg]).view(1, 2, 1, 3)
    labels = torch.tensor([[1.0]])
    got = ops.sec_expand_loss(probs, labels, q_fg=0.5, q_bg=0.25)
    gwrp_fg = (0.7 + 0.5 * 0.5 + 0.25 * 0.2) / (1 + 0.5 + 0.25)  # sorted 0.7, 0.5, 0.2
    gwrp_bg = (0.8 + 0.25 * 0.5 + 0.0625 * 0.3) / (1 + 0.25 + 0.0625)  # sorted 0.8, 0.5, 0.3
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, torch.tensor(-math.log(gwrp_fg) - math.log(gwrp_bg)))


def test_sec_expand_loss_image_without_absent_class():
    probs = _probs(2, 3, 4, 4, seed=1)
    # image 1 has every class: it adds 0 to the absent-class term but still counts in mean_b
    labels = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    got = ops.sec_expand_loss(probs, labels, q_fg=0.0, q_bg=0.0)
    assert torch.isfinite(got)
    absent_term = -torch.log(1 - probs[0, 2].max()) / 2
    present_term = -(torch.log(probs[0, 1].max()) + (probs[1, 1].max() * probs[1, 2].max()).log() / 2) / 2
    bg_term = -(probs[0, 0].max() * probs[1, 0].max()).log() / 2
    torch.testing.assert_close(got, absent_term + present_term + bg_term)
    # the absent term of image 0 is exactly what makes the difference to a fully labelled batch
    full = ops.sec_expand_loss(probs, torch.ones_like(labels), q_fg=0.0, q_bg=0.0)
    present_full = -(
        (probs[0, 1].max() * probs[0, 2].max()).log() / 2 + (probs[1, 1].max() * probs[1, 2].max()).log() / 2
    ) / 2
    torch.testing.assert_close(full, present_full + bg_term)


def test_sec_expand_loss_gradient_with_saturated_absent_free_image():
    # a present class at probability 1 must not leak an inf into the absent-class term
    probs = torch.tensor([[[[0.5, 0.0]], [[0.5, 1.0]]]], dtype=torch.float64, requires_grad=True)
    loss = ops.sec_expand_loss(probs, torch.tensor([[1.0]], dtype=torch.float64), q_fg=0.5, q_bg=0.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(probs.grad).all()


def test_sec_constrain_loss_by_hand():
    # two pixels: KL(crf || probs) averaged over pixels, not its reverse
    probs = torch.tensor([[[[0.5, 0.25]], [[0.5, 0.75]]]])
    crf = torch.tensor([[[[0.9, 0.25]], [[0.1, 0.75]]]])
    got = ops.sec_constrain_loss(probs, crf)
    want = (0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)) / 2
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, torch.tensor(want))


def test_sec_constrain_loss_zero_only_at_agreement():
    probs = _probs(2, 4, 5, 3, seed=2)
    assert ops.sec_constrain_loss(probs, probs.clone()).abs() < 1e-12
    other = _probs(2, 4, 5, 3, seed=3)
    assert ops.sec_constrain_loss(probs, other) > 0.01
    # a class the CRF rules out entirely contributes 0, not NaN
    crf = probs.clone()
    crf[:, 1] = 0
    crf = crf / crf.sum(1, keepdim=True)
    got = ops.sec_constrain_loss(probs, crf)
    assert torch.isfinite(got) and got > 0


def test_sec_constrain_loss_no_gradient_to_crf():
    probs = _probs(1, 3, 2, 2, seed=4).requires_grad_(True)
    crf = _probs(1, 3, 2, 2, seed=5).requires_grad_(True)
    ops.sec_constrain_loss(probs, crf).backward()
    assert crf.grad is None
    # d/dprobs of mean_{hw} sum_k crf log(crf / probs) is -crf / (probs * h * w)
    torch.testing.assert_close(probs.grad, -crf.detach() / (probs.detach() * 4))


def _gradcheck(fn, probs: torch.Tensor) -> None:
    probs = probs.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(fn, (probs,))


def test_sec_losses_gradcheck():
    # distinct values keep the sort order and the maxima fixed under gradcheck's perturbation
    gen = torch.Generator().manual_seed(6)
    probs = torch.rand(2, 3, 2, 3, generator=gen, dtype=torch.float64) * 0.8 + 0.1
    cues = (torch.rand(2, 3, 2, 3, generator=gen) < 0.5).double()
    cues[:, 0, 0, 0] = 1
    labels = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    crf = _probs(2, 3, 2, 3, seed=7)
    _gradcheck(lambda p: ops.sec_seed_loss(p, cues), probs)
    _gradcheck(lambda p: ops.sec_expand_loss(p, labels, q_fg=0.7, q_bg=0.8), probs)
    _gradcheck(lambda p: ops.sec_constrain_loss(p, crf), probs)


@pytest.mark.parametrize("op", ["sec_seed_loss", "sec_expand_loss", "sec_constrain_loss"])
def test_sec_losses_reject_bad_shapes(op):
    probs = _probs(2, 3, 4, 4, seed=8)
    other = torch.zeros(2, 3) if op == "sec_expand_loss" else torch.zeros(2, 3, 4, 5)
    with pytest.raises(ValueError):
        getattr(ops, op)(probs, other)
    with pytest.raises(ValueError):
        getattr(ops, op)(probs[:, :1], other)
