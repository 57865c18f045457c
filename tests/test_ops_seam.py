"""``ops.seam_normalize`` / ``ops.pcm`` / ``ops.seam_losses`` against SEAM's outputs and by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import golden_cases, run_torch_golden

from wsss_cli import ops


@pytest.mark.parametrize("path", golden_cases("seam_normalize"), ids=lambda p: p.stem)
def test_seam_normalize_golden(path):
    run_torch_golden("seam_normalize", path)


@pytest.mark.parametrize("path", golden_cases("pcm"), ids=lambda p: p.stem)
def test_pcm_golden(path):
    run_torch_golden("pcm", path)


@pytest.mark.parametrize("path", golden_cases("seam_losses"), ids=lambda p: p.stem)
def test_seam_losses_golden(path):
    run_torch_golden("seam_losses", path)


def test_seam_normalize_by_hand():
    # one image, two foreground channels over three pixels; channel 0 is garbage
    cams = torch.tensor([[[[7.0, -3.0, 9.0]], [[2.0, 4.0, -1.0]], [[1.0, 2.0, 0.5]]]])
    got = ops.seam_normalize(cams)
    n1 = torch.tensor([2.0, 4.0, 0.0]).sub(1e-5).clamp_min(0) / (4 + 1e-5)
    n2 = torch.tensor([1.0, 2.0, 0.5]).sub(1e-5) / (2 + 1e-5)
    top = torch.maximum(n1, n2)
    want = torch.stack([1 - top, torch.where(n1 < top, 0, n1), torch.where(n2 < top, 0, n2)])
    torch.testing.assert_close(got, want.view(1, 3, 1, 3))


def test_seam_normalize_properties():
    gen = torch.Generator().manual_seed(0)
    cams = torch.randn(3, 6, 9, 11, generator=gen, requires_grad=True)
    got = ops.seam_normalize(cams)
    assert got.shape == cams.shape and not got.requires_grad
    fg = got[:, 1:]
    top = fg.amax(1)
    torch.testing.assert_close(got[:, 0], 1 - top)
    # every foreground value is either the pixel's maximum or 0
    assert ((fg == top[:, None]) | (fg == 0)).all()
    assert (fg >= 0).all() and (fg < 1).all()
    # channel 0 of the input plays no part
    changed = cams.detach().clone()
    changed[:, 0] = 100
    torch.testing.assert_close(ops.seam_normalize(changed), got, rtol=0, atol=0)


def _two_regions(h: int, w: int) -> torch.Tensor:
    """Features ``[1, 2, h, w]``: orthogonal unit vectors on the left and right halves."""
    left = torch.zeros(h, w)
    left[:, : w // 2] = 1
    return torch.stack([left, 1 - left])[None]


def test_pcm_keeps_orthogonal_regions_apart():
    features = 3 * _two_regions(6, 8)  # the scale is normalised away
    gen = torch.Generator().manual_seed(1)
    cams = torch.rand(1, 3, 6, 8, generator=gen)
    cams[..., 4:] = 0  # nothing in the right half
    got = ops.pcm(cams, features)
    assert got.shape == (1, 3, 6, 8)
    assert (got[..., 4:] == 0).all()
    # within a region every affinity is 1: each pixel gets the region's sum / (size + eps)
    want = cams[..., :4].sum((2, 3)) / (24 + 1e-5)
    torch.testing.assert_close(got[..., :4], want[..., None, None].expand(1, 3, 6, 4))


def test_pcm_output_on_the_feature_grid():
    features = _two_regions(10, 12).expand(2, 2, 10, 12) + 0.0
    cams = torch.zeros(2, 2, 5, 6)
    cams[:, 0, :, :3] = 1  # left half at the cams' resolution
    got = ops.pcm(cams, features)
    assert got.shape == (2, 2, 10, 12)
    resized = F.interpolate(cams, size=(10, 12), mode="bilinear", align_corners=True)
    # align_corners=True resizing: the right region receives the interpolated seam only
    want_right = resized[:, 0, :, 6:].sum((1, 2)) / (60 + 1e-5)
    torch.testing.assert_close(got[:, 0, :, 6:], want_right[:, None, None].expand(2, 10, 6))
    assert (got[:, 1] == 0).all()


def test_pcm_passes_gradient_to_both_inputs():
    gen = torch.Generator().manual_seed(2)
    cams = torch.rand(2, 4, 5, 5, generator=gen, requires_grad=True)
    features = torch.randn(2, 8, 7, 7, generator=gen, requires_grad=True)
    ops.pcm(cams, features).square().sum().backward()
    assert cams.grad.abs().sum() > 0 and features.grad.abs().sum() > 0


def test_pcm_works_in_float64():
    gen = torch.Generator().manual_seed(3)
    got = ops.pcm(torch.rand(1, 2, 4, 4, generator=gen).double(), torch.rand(1, 3, 4, 4).double())
    assert got.dtype == torch.float64


def _ramps(n: int, k: int, h: int, w: int) -> torch.Tensor:
    """Positive maps affine in the coordinates, one direction per channel: bilinear resizing
    with ``align_corners=True`` samples them exactly and keeps their min and max (corners)."""
    ys = torch.linspace(0, 1, h)[:, None]
    xs = torch.linspace(0, 1, w)[None, :]
    maps = [(1 + (i + 1) * ys + (k - i) * xs) * (1 + j) for j in range(n) for i in range(k)]
    return torch.stack(maps).view(n, k, h, w)


def test_seam_losses_er_vanishes_for_consistent_views():
    n, k, big_h, big_w, scale = 2, 4, 31, 25, 0.3
    size = (math.floor(big_h * scale), math.floor(big_w * scale))
    cam1 = _ramps(n, k, big_h, big_w)
    cam2 = F.interpolate(cam1, size=size, mode="bilinear", align_corners=True)
    rv1 = cam1.flip(-1)
    rv2 = F.interpolate(rv1, size=size, mode="bilinear", align_corners=True)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    _, loss_er, _ = ops.seam_losses(cam1, rv1, cam2, rv2, labels, scale=scale)
    # not exactly 0: the 1e-5 of max_norm clips the minimum corner before the resize
    assert loss_er < 1e-5
    # a different second view does give an ER loss
    _, other, _ = ops.seam_losses(cam1, rv1, cam2.flip(-2), rv2, labels, scale=scale)
    assert other > 0.05


def test_seam_losses_cls_by_hand():
    # zero CAMs: each soft-margin loss is log 2; constant refined maps v: min-pooling gives v
    n, c, v = 2, 3, 0.25
    cam1, cam2 = torch.zeros(n, 1 + c, 12, 10), torch.zeros(n, 1 + c, 6, 5)
    rv1, rv2 = torch.full_like(cam1, v), torch.full_like(cam2, v)
    # background and absent classes are left out of the min-pooling term
    rv1[:, 0] = rv2[:, 0] = 5
    rv1[:, 3] = rv2[:, 3] = 7
    labels = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    loss_cls, _, _ = ops.seam_losses(cam1, rv1, cam2, rv2, labels, scale=0.5)
    torch.testing.assert_close(loss_cls, torch.tensor(math.log(2) + v))


def test_seam_losses_ignore_absent_classes_in_er_and_ecr():
    gen = torch.Generator().manual_seed(4)
    cam1, rv1 = torch.randn(2, 2, 5, 20, 18, generator=gen)
    cam2, rv2 = torch.randn(2, 2, 5, 10, 9, generator=gen)
    labels = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    base = ops.seam_losses(cam1, rv1, cam2, rv2, labels, scale=0.5)
    noisy = [t.clone() for t in (cam1, rv1, cam2, rv2)]
    for t in noisy:
        t[0, 2] = t[0, 2] * 5 + 3  # class 2 is absent from image 0
    changed = ops.seam_losses(*noisy, labels, scale=0.5)
    torch.testing.assert_close(changed[1:], base[1:])
    assert changed[0] != base[0]  # the pooled score of an absent class is still penalised


def test_seam_losses_gradients_reach_all_maps():
    gen = torch.Generator().manual_seed(5)
    cam1 = torch.randn(2, 4, 16, 14, generator=gen, requires_grad=True)
    rv1 = torch.randn(2, 4, 16, 14, generator=gen, requires_grad=True)
    cam2 = torch.randn(2, 4, 4, 4, generator=gen, requires_grad=True)
    rv2 = torch.randn(2, 4, 4, 4, generator=gen, requires_grad=True)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    losses = ops.seam_losses(cam1, rv1, cam2, rv2, labels, scale=0.3, ecr_top=0.3)
    assert all(loss.ndim == 0 and loss.dtype == torch.float32 for loss in losses)
    sum(losses).backward()
    for t in (cam1, rv1, cam2, rv2):
        assert t.grad is not None and t.grad.abs().sum() > 0


def test_seam_losses_reject_inconsistent_shapes():
    cam1, cam2 = torch.rand(1, 3, 20, 20), torch.rand(1, 3, 10, 10)
    labels = torch.ones(1, 2)
    with pytest.raises(ValueError, match="cam2"):
        ops.seam_losses(cam1, cam1, cam2, cam2, labels, scale=0.3)
    with pytest.raises(ValueError, match="labels"):
        ops.seam_losses(cam1, cam1, cam2, cam2, torch.ones(1, 3), scale=0.5)
    with pytest.raises(ValueError, match="ecr_top"):
        ops.seam_losses(cam1, cam1, cam2, cam2, labels, scale=0.5, ecr_top=0.0)


def test_seam_ops_reject_bad_ranks():
    with pytest.raises(ValueError, match="cams"):
        ops.seam_normalize(torch.rand(3, 4, 5))
    with pytest.raises(ValueError, match="same B"):
        ops.pcm(torch.rand(2, 3, 4, 4), torch.rand(1, 5, 4, 4))
