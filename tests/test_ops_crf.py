"""``ops.dense_crf`` against PSA's ``crf_inference`` outputs."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, golden_cases, load_golden

from wsss_cli import ops


@pytest.mark.parametrize("path", golden_cases("dense_crf"), ids=lambda p: p.stem)
def test_dense_crf_golden(path):
    _, params, inputs, expected = load_golden(path)
    got = ops.dense_crf(**inputs, **params)
    assert got.dtype == np.float32
    assert_close(got, expected["posterior"])


def _inputs(h=12, w=10, k=3, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    logits = rng.normal(size=(k, h, w))
    probs = np.exp(logits) / np.exp(logits).sum(0)
    return image, probs.astype(np.float32)


def test_posterior_is_a_distribution():
    image, probs = _inputs()
    q = ops.dense_crf(image, probs, iters=3)
    assert q.shape == probs.shape
    assert (q >= 0).all()
    np.testing.assert_allclose(q.sum(0), 1.0, atol=1e-5)


def test_non_contiguous_image_accepted():
    image, probs = _inputs()
    flipped = image[:, ::-1]
    np.testing.assert_array_equal(
        ops.dense_crf(flipped, probs), ops.dense_crf(np.ascontiguousarray(flipped), probs)
    )


@pytest.mark.parametrize(
    ("image_shape", "probs_shape", "match"),
    [
        ((12, 10, 3), (3, 10, 12), "spatial size"),
        ((12, 10), (3, 12, 10), "image must be"),
        ((12, 10, 4), (3, 12, 10), "image must be"),
        ((12, 10, 3), (12, 10), "probs must be"),
        ((12, 10, 3), (0, 12, 10), "at least one label"),
    ],
)
def test_shape_mismatch_rejected(image_shape, probs_shape, match):
    image = np.zeros(image_shape, dtype=np.uint8)
    probs = np.full(probs_shape, 1.0 / 3, dtype=np.float32)
    with pytest.raises(ValueError, match=match):
        ops.dense_crf(image, probs)


def test_float_image_rejected():
    image, probs = _inputs()
    with pytest.raises(ValueError, match="uint8"):
        ops.dense_crf(image.astype(np.float32), probs)


def test_dense_crf_accepts_read_only_inputs():
    """joblib passes large arrays to worker processes as read-only memory maps."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)
    probs = rng.dirichlet(np.ones(3), size=(20, 24)).transpose(2, 0, 1).astype(np.float32)
    want = ops.dense_crf(image, probs, iters=3)
    image.setflags(write=False)
    probs.setflags(write=False)
    np.testing.assert_array_equal(ops.dense_crf(image, probs, iters=3), want)
