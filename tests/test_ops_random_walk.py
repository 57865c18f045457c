"""``ops.random_walk`` against the golden vectors and a dense N x N implementation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import assert_close, golden_cases, load_golden

from wsss_cli import ops
from wsss_cli.ops import native

needs_native = pytest.mark.skipif(native.library("random_walk") is None,
                                  reason="no C compiler for the native walk")
BACKENDS = ["torch", pytest.param("native", marks=needs_native)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("path", golden_cases("random_walk"), ids=lambda p: p.stem)
def test_random_walk_golden(path, backend):
    _, params, inputs, expected = load_golden(path)
    got = ops.random_walk(**{k: torch.from_numpy(v) for k, v in inputs.items()}, **params,
                          backend=backend)
    assert got.dtype == torch.float32
    assert_close(got.numpy(), expected["out64"])


def _dense_walk(scores, features, radius, beta, logt):
    """OPS_API.md literally, float64, with N x N matrices; also returns the degrees d."""
    k, h, w = scores.shape
    n = h * w
    f = features.reshape(features.shape[0], n).double()
    y, x = np.divmod(np.arange(n), w)
    near = (y[:, None] - y[None]) ** 2 + (x[:, None] - x[None]) ** 2 < radius * radius
    a = torch.exp(-(f[:, :, None] - f[:, None, :]).abs().mean(0))
    a = torch.where(torch.from_numpy(near), a, torch.zeros(()))
    a.fill_diagonal_(1.0)
    big_a = a**beta
    degree = big_a.sum(0)
    trans = big_a / degree
    for _ in range(logt):
        trans = trans @ trans
    return (scores.reshape(k, n).double() @ trans).reshape(k, h, w), degree


def _inputs(k, c, h, w, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    scores = torch.rand(k, h, w, generator=gen, dtype=dtype)
    features = torch.rand(c, h, w, generator=gen, dtype=dtype) * 0.6
    return scores, features


# float32 runs the CPU's vectorised gather kernel, float64 the generic one
_TOLERANCE = {torch.float64: {"rtol": 1e-10, "atol": 1e-12}, torch.float32: {"rtol": 1e-4, "atol": 1e-5}}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize(
    ("h", "w", "radius", "beta", "logt"),
    [(7, 11, 3, 8, 4), (9, 5, 4, 2.5, 3), (3, 2, 5, 8, 2), (1, 6, 2, 1, 5), (12, 10, 5, 8, 6)],
)
def test_matches_dense_reference(h, w, radius, beta, logt, dtype):
    scores, features = _inputs(3, 4, h, w, dtype=dtype)
    want, _ = _dense_walk(scores, features, radius, beta, logt)
    got = ops.random_walk(scores, features, radius, beta, logt)
    assert got.dtype == dtype and got.shape == scores.shape and got.is_contiguous()
    torch.testing.assert_close(got, want.to(dtype), **_TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize(("h", "w", "radius"), [(6, 7, 3), (2, 3, 5)])
def test_batch_walks_each_image_on_its_own_graph(h, w, radius, dtype):
    # K = 9 is not a multiple of the row padding; the images' features differ
    b, k, c = 3, 9, 4
    scores, features = _inputs(b * k, b * c, h, w, seed=3, dtype=dtype)
    scores, features = scores.reshape(b, k, h, w), features.reshape(b, c, h, w)
    got = ops.random_walk(scores, features, radius, 8, 4)
    assert got.dtype == dtype and got.shape == (b, k, h, w)
    for i in range(b):
        want, _ = _dense_walk(scores[i], features[i], radius, 8, 4)
        torch.testing.assert_close(got[i], want.to(dtype), **_TOLERANCE[dtype])


@needs_native
@pytest.mark.parametrize(
    ("b", "k", "h", "w", "radius", "logt"),
    # K = 40 walks in two turns (32 + 8 columns); w = 3 and 7 leave pixels after the blocks
    # of four; radius 1 has no neighbours, h = 1 no rows below; the last two are large
    # enough for three threads' bands (on 2 rows: two bands)
    [(1, 21, 13, 17, 5, 5), (2, 40, 9, 7, 4, 3), (1, 1, 6, 3, 5, 4), (3, 3, 1, 9, 3, 2),
     (1, 5, 8, 8, 1, 2), (2, 8, 16, 12, 5, 0), (1, 3, 80, 81, 5, 3), (1, 2, 2, 7000, 3, 2)],
)
@pytest.mark.parametrize("threads", [1, 3])
def test_native_walk_matches_torch(b, k, h, w, radius, logt, threads):
    gen = torch.Generator().manual_seed(k + h)
    scores = torch.rand(b, k, h, w, generator=gen)
    # 37 channels: the distances' blocks of four channels leave one over; channels last,
    # as AffinityNet's features come, so that the kernel reads a copy
    features = torch.rand(b, h, w, 37, generator=gen).permute(0, 3, 1, 2)
    want = ops.random_walk(scores, features, radius, 8, logt, backend="torch")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = ops.random_walk(scores, features, radius, 8, logt, backend="native")
    finally:
        torch.set_num_threads(before)
    assert got.shape == want.shape and got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    one = ops.random_walk(scores[-1], features[-1], radius, 8, logt, backend="native")
    torch.testing.assert_close(one, got[-1], rtol=0, atol=0)


def test_without_a_compiler_auto_walks_in_torch(monkeypatch, tmp_path):
    scores, features = _inputs(3, 4, 7, 9, dtype=torch.float32)
    want = ops.random_walk(scores, features, 3, 8, 4, backend="torch")
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    native.library.cache_clear()
    try:
        assert native.library("random_walk") is None
        torch.testing.assert_close(ops.random_walk(scores, features, 3, 8, 4), want, rtol=0, atol=0)
        with pytest.raises(RuntimeError, match="C compiler"):
            ops.random_walk(scores, features, 3, 8, 4, backend="native")
    finally:
        native.library.cache_clear()


@needs_native
def test_the_native_kernel_is_built_once_into_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    native.library.cache_clear()
    try:
        assert native.library("random_walk") is not None
        built = list((tmp_path / "wsss" / "native").iterdir())
        assert len(built) == 1 and built[0].suffix == ".so"
        stamp = built[0].stat().st_mtime_ns
        native.library.cache_clear()
        assert native.library("random_walk") is not None
        assert list((tmp_path / "wsss" / "native").iterdir()) == built
        assert built[0].stat().st_mtime_ns == stamp
    finally:
        native.library.cache_clear()


def test_backend_choices():
    scores, features = _inputs(2, 3, 4, 5)
    with pytest.raises(ValueError, match="backend"):
        ops.random_walk(scores.float(), features.float(), backend="cuda")
    with pytest.raises(ValueError, match="float32 on the CPU"):
        ops.random_walk(scores, features, backend="native")


def test_degree_weighted_mass_is_conserved():
    # T d = A D^-1 d = A 1 = d, so (s T) . d = s . d for every channel
    scores, features = _inputs(2, 3, 6, 8, seed=1)
    _, degree = _dense_walk(scores, features, 3, 8, 0)
    out = ops.random_walk(scores, features, 3, 8, 5)
    before = scores.reshape(2, -1) @ degree
    after = out.reshape(2, -1) @ degree
    torch.testing.assert_close(after, before, rtol=1e-12, atol=0)


def test_constant_scores_are_a_fixed_point_and_distributions_stay_distributions():
    # columns of T sum to 1, so each output is a convex combination of the inputs
    scores, features = _inputs(4, 5, 10, 12, seed=2, dtype=torch.float32)
    probs = scores / scores.sum(0, keepdim=True)
    out = ops.random_walk(probs, features, 5, 8, 6)
    torch.testing.assert_close(out.sum(0), torch.ones(10, 12))
    assert (out >= probs.amin((1, 2), keepdim=True) - 1e-6).all()
    assert (out <= probs.amax((1, 2), keepdim=True) + 1e-6).all()
    const = torch.full((1, 10, 12), 0.25)
    torch.testing.assert_close(ops.random_walk(const, features, 5, 8, 6), const)


def test_radius_one_is_identity():
    scores, features = _inputs(2, 3, 5, 6)
    torch.testing.assert_close(ops.random_walk(scores, features, 1, 8, 3), scores)


def test_grid_mismatch_rejected():
    with pytest.raises(ValueError, match="grid"):
        ops.random_walk(torch.rand(2, 4, 5), torch.rand(3, 5, 4))


def test_batch_mismatch_rejected():
    with pytest.raises(ValueError, match="batch"):
        ops.random_walk(torch.rand(2, 3, 4, 5), torch.rand(3, 2, 4, 5))
    with pytest.raises(ValueError, match="must be"):
        ops.random_walk(torch.rand(3, 4, 5), torch.rand(1, 2, 4, 5))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    scores, features = _inputs(3, 16, 20, 23, dtype=torch.float32)
    want = ops.random_walk(scores, features, 5, 8, 6)
    got = ops.random_walk(scores.cuda(), features.cuda(), 5, 8, 6)
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.cpu(), want, rtol=1e-4, atol=1e-5)
    batch = ops.random_walk(torch.stack([scores, scores.flip(1)]).cuda(),
                            torch.stack([features, features.flip(1)]).cuda(), 5, 8, 6)
    torch.testing.assert_close(batch[0].cpu(), want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(batch[1].cpu(), want.flip(1), rtol=1e-4, atol=1e-5)
