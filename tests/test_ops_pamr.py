"""``ops.pamr`` against 1-stage-wseg's ``PAMR`` outputs and its defining properties."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close, golden_cases, load_golden

from wsss_cli import ops


@pytest.mark.parametrize("path", golden_cases("pamr"), ids=lambda p: p.stem)
def test_pamr_golden(path):
    _, params, inputs, expected = load_golden(path)
    got = ops.pamr(**{k: torch.from_numpy(v) for k, v in inputs.items()}, **params)
    assert got.dtype == torch.float32
    assert_close(got.numpy(), expected["refined"])


def _naive_pamr(image, masks, dilations, iters):
    """The API's wording spelled out with clamped index gathers instead of padding."""
    b, _, h, w = image.shape
    masks = F.interpolate(masks, size=(h, w), mode="bilinear", align_corners=True)
    ys, xs = torch.arange(h)[:, None], torch.arange(w)[None, :]

    def at(t, dy, dx):
        return t[..., (ys + dy).clamp(0, h - 1), (xs + dx).clamp(0, w - 1)]

    steps = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    window = torch.stack([at(image, dy * d, dx * d) for d in dilations for dy, dx in steps], 2)
    sigma = window.std(2)
    ring = [(dy * d, dx * d) for d in dilations for dy, dx in steps if dy or dx]
    kappa = torch.stack(
        [(-(image - at(image, dy, dx)).abs() / (1e-8 + 0.1 * sigma)).mean(1) for dy, dx in ring],
        1,
    )
    alpha = kappa.softmax(1)
    for _ in range(iters):
        masks = sum(alpha[:, j : j + 1] * at(masks, dy, dx) for j, (dy, dx) in enumerate(ring))
    return masks


@pytest.mark.parametrize(
    ("shape", "mask_size", "dilations", "iters"),
    [
        ((2, 3, 9, 13), (4, 5), (1, 2, 4), 3),
        # dilations beyond both image sides: every far neighbour is clamped to the border
        ((1, 3, 5, 7), (5, 7), (3, 1, 9), 4),
    ],
)
def test_pamr_matches_naive_formulation(shape, mask_size, dilations, iters):
    gen = torch.Generator().manual_seed(1)
    image = torch.rand(shape, generator=gen)
    masks = torch.rand(shape[0], 4, *mask_size, generator=gen).softmax(1)
    want = _naive_pamr(image.double(), masks.double(), dilations, iters)
    got = ops.pamr(image, masks, dilations=dilations, iters=iters)
    assert got.shape == (shape[0], 4, *shape[2:])
    assert_close(got.numpy(), want.numpy())


def test_pamr_keeps_constant_masks():
    gen = torch.Generator().manual_seed(2)
    image = torch.rand(2, 3, 20, 24, generator=gen)
    values = torch.tensor([0.2, 0.5, 0.3])
    masks = values.view(1, 3, 1, 1).expand(2, 3, 10, 12).contiguous()
    got = ops.pamr(image, masks)
    torch.testing.assert_close(got, values.view(1, 3, 1, 1).expand(2, 3, 20, 24))


def test_pamr_keeps_pixels_distributions():
    gen = torch.Generator().manual_seed(3)
    image = torch.rand(1, 3, 32, 28, generator=gen)
    masks = (4 * torch.randn(1, 5, 32, 28, generator=gen)).softmax(1)
    got = ops.pamr(image, masks, iters=5)
    assert (got >= 0).all()
    torch.testing.assert_close(got.sum(1), torch.ones(1, 32, 28))
    # and it did refine something
    assert (got - masks).abs().max() > 0.05


def test_pamr_images_of_a_batch_are_independent():
    gen = torch.Generator().manual_seed(4)
    image = torch.rand(3, 3, 16, 18, generator=gen)
    masks = torch.rand(3, 2, 8, 9, generator=gen).softmax(1)
    together = ops.pamr(image, masks, dilations=(1, 2, 4), iters=4)
    for i in range(3):
        alone = ops.pamr(image[i : i + 1], masks[i : i + 1], dilations=(1, 2, 4), iters=4)
        torch.testing.assert_close(together[i : i + 1], alone)


def test_pamr_zero_iterations_only_resizes():
    gen = torch.Generator().manual_seed(5)
    image = torch.rand(1, 3, 12, 16, generator=gen)
    masks = torch.rand(1, 3, 4, 5, generator=gen)
    want = F.interpolate(masks, size=(12, 16), mode="bilinear", align_corners=True)
    torch.testing.assert_close(ops.pamr(image, masks, iters=0), want)


@pytest.mark.parametrize("dilations", [(), (1, 1, 2), (0, 1)])
def test_pamr_rejects_bad_dilations(dilations):
    with pytest.raises(ValueError, match="dilations"):
        ops.pamr(torch.rand(1, 3, 8, 8), torch.rand(1, 2, 8, 8), dilations=dilations)
