"""``ops.ngwp`` / ``ops.pseudo_gt`` against 1-stage-wseg's outputs and by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import assert_close, golden_cases, load_golden

from wsss_cli import ops


@pytest.mark.parametrize("path", golden_cases("ngwp"), ids=lambda p: p.stem)
def test_ngwp_golden(path):
    _, params, inputs, expected = load_golden(path)
    got = ops.ngwp(torch.from_numpy(inputs["logits"]), **params)
    names = expected["__outputs__"]
    assert names == ["scores", "masks"]
    assert len(got) == 2
    for name, value in zip(names, got, strict=True):
        assert value.dtype == torch.float32, name
        assert_close(value.numpy(), expected[name])


def test_ngwp_uniform_logits_by_hand():
    # all-zero logits: m = 1 / (1 + C) everywhere, the pooled logits are 0
    c, p, lam = 4, 2.0, 0.05
    scores, masks = ops.ngwp(torch.zeros(2, 1 + c, 6, 5), focal_p=p, focal_lambda=lam)
    m = 1 / (1 + c)
    torch.testing.assert_close(masks, torch.full((2, 1 + c, 6, 5), m))
    want = (1 - m) ** p * math.log(lam + m)
    torch.testing.assert_close(scores, torch.full((2, c), want))


def test_ngwp_pooling_by_hand():
    # one image, two channels, two pixels: softmax is sigmoid of the difference
    logits = torch.tensor([[[[0.0, 1.0]], [[2.0, -1.0]]]])
    scores, masks = ops.ngwp(logits, focal_p=1, focal_lambda=0.1)
    m1 = torch.sigmoid(torch.tensor([2.0, -2.0]))
    pooled = (m1 * torch.tensor([2.0, -1.0])).sum() / (1 + m1.sum())
    focal = (1 - m1.mean()) * torch.log(0.1 + m1.mean())
    torch.testing.assert_close(scores, (pooled + focal).view(1, 1))
    torch.testing.assert_close(masks.sum(1), torch.ones(1, 1, 2))


@pytest.mark.parametrize("path", golden_cases("pseudo_gt"), ids=lambda p: p.stem)
def test_pseudo_gt_golden(path):
    _, params, inputs, expected = load_golden(path)
    got = ops.pseudo_gt(torch.from_numpy(inputs["masks"]), **params)
    assert got.dtype == torch.float32
    np.testing.assert_array_equal(got.numpy(), expected["pseudo"])


def test_pseudo_gt_marks_ambiguous_pixels_zero():
    masks = torch.tensor(
        [
            [
                [[1.0, 0.8, 0.0, 0.3]],  # background: threshold 0.7
                [[0.0, 0.9, 1.0, 0.0]],  # threshold 0.6
                [[0.0, 0.0, 0.0, 0.0]],  # absent class: threshold cutoff_low
            ]
        ]
    )
    got = ops.pseudo_gt(masks)
    want = torch.tensor(
        [
            [
                [[1.0, 0.0, 0.0, 0.0]],
                [[0.0, 0.0, 1.0, 0.0]],  # pixel 1 is above both thresholds: ambiguous
                [[0.0, 0.0, 0.0, 0.0]],
            ]
        ]
    )
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_pseudo_gt_thresholds():
    # background peaks at 0.5: threshold 0.7 * 0.5 (with cutoff_top it would take 0.34);
    # channel 1 peaks at 0.25: 0.5 * 0.25 < cutoff_low, so cutoff_low = 0.2 decides;
    # channel 2 peaks at 0.9: 0.5 * 0.9 = 0.45 decides
    masks = torch.tensor(
        [
            [
                [[0.0, 0.34, 0.0, 0.0, 0.0, 0.5]],
                [[0.0, 0.0, 0.25, 0.21, 0.19, 0.0]],
                [[0.9, 0.0, 0.46, 0.0, 0.44, 0.0]],
            ]
        ]
    )
    got = ops.pseudo_gt(masks, cutoff_top=0.5, cutoff_bg=0.7, cutoff_low=0.2)
    want = torch.tensor(
        [
            [
                [[0.0, 0.0, 0.0, 0.0, 0.0, 1.0]],
                [[0.0, 0.0, 0.0, 1.0, 0.0, 0.0]],  # pixel 2 is ambiguous with channel 2
                [[1.0, 0.0, 0.0, 0.0, 0.0, 0.0]],
            ]
        ]
    )
    torch.testing.assert_close(got, want, rtol=0, atol=0)
