"""``ops.gradcam`` against pytorch-grad-cam's outputs and by hand."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_close, golden_cases, load_golden

from wsss_cli import ops


@pytest.mark.parametrize("path", golden_cases("gradcam"), ids=lambda p: p.stem)
def test_gradcam_golden(path):
    _, params, inputs, expected = load_golden(path)
    got = ops.gradcam(**{k: torch.from_numpy(v) for k, v in inputs.items()}, **params)
    assert expected["__outputs__"] == ["cam"]
    assert got.dtype == torch.float32
    assert_close(got.numpy(), expected["cam"])


def test_gradcam_by_hand():
    # two channels on a 1 x 3 map; mean gradients 1 and -0.5
    activations = torch.tensor([[[[1.0, 2.0, 0.0]], [[4.0, 0.0, 2.0]]]])
    gradients = torch.tensor([[[[0.0, 3.0, 0.0]], [[-1.5, 0.0, 0.0]]]])
    got = ops.gradcam(activations, gradients)
    # 1 * [1, 2, 0] - 0.5 * [4, 0, 2] = [-1, 2, -1], then relu
    torch.testing.assert_close(got, torch.tensor([[[0.0, 2.0, 0.0]]]))


def test_gradcam_plus_plus_by_hand():
    # one channel, constant gradient c on 4 pixels, activations summing to s
    c, s = 0.5, 6.0
    activations = torch.tensor([[[[1.0, 2.0], [3.0, 0.0]]]])
    gradients = torch.full((1, 1, 2, 2), c)
    alpha = c**2 / (2 * c**2 + s * c**3 + 1e-6)
    want = 4 * c * alpha * activations[:, 0]
    torch.testing.assert_close(ops.gradcam(activations, gradients, plus_plus=True), want)
    # plain Grad-CAM weights the same map by the mean gradient instead
    torch.testing.assert_close(ops.gradcam(activations, gradients), c * activations[:, 0])


def test_gradcam_plus_plus_ignores_zero_and_negative_gradients():
    gen = torch.Generator().manual_seed(0)
    activations = torch.rand(2, 4, 5, 6, generator=gen)
    gradients = torch.rand(2, 4, 5, 6, generator=gen)
    gradients[:, 0] = 0  # channel 0: no gradient at all
    gradients[:, 1] = -gradients[:, 1]  # channel 1: only negative gradients
    base = ops.gradcam(activations, gradients, plus_plus=True)
    louder = activations.clone()
    louder[:, :2] *= 50
    torch.testing.assert_close(ops.gradcam(louder, gradients, plus_plus=True), base)
    # all-zero gradients give an all-zero map (no 0 / 0 anywhere)
    zero = ops.gradcam(activations, torch.zeros_like(gradients), plus_plus=True)
    assert (zero == 0).all()
    # plain Grad-CAM does count negative gradients
    assert not torch.allclose(ops.gradcam(louder, gradients), ops.gradcam(activations, gradients))


@pytest.mark.parametrize("plus_plus", [False, True])
def test_gradcam_shape_and_sign(plus_plus):
    gen = torch.Generator().manual_seed(1)
    activations = torch.rand(3, 7, 4, 9, generator=gen)
    gradients = torch.randn(3, 7, 4, 9, generator=gen)
    got = ops.gradcam(activations, gradients, plus_plus=plus_plus)
    assert got.shape == (3, 4, 9)
    assert (got >= 0).all()
    # images of a batch are independent
    torch.testing.assert_close(got[1:2], ops.gradcam(activations[1:2], gradients[1:2], plus_plus=plus_plus))


def test_gradcam_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="gradients"):
        ops.gradcam(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 5))
    with pytest.raises(ValueError, match="gradients"):
        ops.gradcam(torch.rand(3, 4, 4), torch.rand(3, 4, 4))
