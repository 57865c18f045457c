"""``ops.affinity_offsets`` / ``ops.affinity_labels`` against PSA's recorded outputs."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import golden_cases, load_golden

from wsss_cli import ops


@pytest.mark.parametrize("path", golden_cases("affinity_offsets"), ids=lambda p: p.stem)
def test_offsets_golden(path):
    _, params, _, expected = load_golden(path)
    got = np.array(ops.affinity_offsets(**params), dtype=np.int64)
    np.testing.assert_array_equal(got, expected["offsets"])


@pytest.mark.parametrize("path", golden_cases("affinity_labels"), ids=lambda p: p.stem)
def test_labels_golden(path):
    _, params, inputs, expected = load_golden(path)
    got = ops.affinity_labels(**inputs, **params)
    names = expected["__outputs__"]
    assert len(got) == len(names)
    for name, arr in zip(names, got, strict=True):
        assert arr.dtype == np.bool_, name
        np.testing.assert_array_equal(arr, expected[name], err_msg=name)
    offsets = np.array(ops.affinity_offsets(params["radius"]), dtype=np.int64)
    np.testing.assert_array_equal(offsets, expected["offsets"])


@pytest.mark.parametrize("radius", [1, 2, 3, 5, 8])
def test_offsets_cover_disk_once(radius):
    half = ops.affinity_offsets(radius)
    both = half + [(-dy, -dx) for dy, dx in half] + [(0, 0)]
    disk = [
        (dy, dx)
        for dy in range(-radius + 1, radius)
        for dx in range(-radius + 1, radius)
        if dy * dy + dx * dx < radius * radius
    ]
    assert len(both) == len(set(both))
    assert sorted(both) == sorted(disk)


def test_labels_match_pairwise_definition():
    rng = np.random.default_rng(3)
    label = rng.choice(
        np.array([0, 2, 7, 255], dtype=np.uint8), size=(9, 13), p=[0.4, 0.3, 0.2, 0.1]
    )
    radius = 4
    bg_pos, fg_pos, neg = ops.affinity_labels(label, radius)
    offsets = ops.affinity_offsets(radius)
    win_h, win_w = 9 - radius + 1, 13 - 2 * radius + 2
    assert bg_pos.shape == (len(offsets), win_h * win_w)
    for k, (dy, dx) in enumerate(offsets):
        for n in range(win_h * win_w):
            y, x = divmod(n, win_w)
            a = label[y, x + radius - 1]
            b = label[y + dy, x + radius - 1 + dx]
            assert bg_pos[k, n] == (a == 0 and b == 0)
            assert fg_pos[k, n] == (a == b and a not in (0, 255))
            assert neg[k, n] == (a != b and 255 not in (a, b))


def test_labels_too_small_rejected():
    with pytest.raises(ValueError, match="too small"):
        ops.affinity_labels(np.zeros((10, 8), dtype=np.uint8), radius=5)
