"""The PyTorch (permutohedral lattice) backend of ``ops.dense_crf`` against pydensecrf."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close, golden_cases, load_golden

from wsss_cli.data.io import read_image, read_mask
from wsss_cli.errors import WsssError
from wsss_cli.ops import crf
from wsss_cli.ops.crf import dense_crf, dense_crf_torch


@pytest.mark.parametrize("path", golden_cases("dense_crf"), ids=lambda p: p.stem)
def test_torch_backend_golden(path):
    _, params, inputs, expected = load_golden(path)
    got = dense_crf(**inputs, **params, backend="torch")
    assert got.dtype == np.float32
    assert_close(got, expected["posterior"])


def noisy_probs(mask: np.ndarray, n_labels: int, seed: int) -> np.ndarray:
    """``[K, H, W]`` float32 softmax of a blurred one-hot of ``mask`` ``[H, W]`` plus noise."""
    gen = torch.Generator().manual_seed(seed)
    one_hot = F.one_hot(torch.from_numpy(mask).long(), n_labels).permute(2, 0, 1)[None].float()
    h, w = mask.shape
    coarse = F.avg_pool2d(one_hot, 8, ceil_mode=True)
    logits = 4 * coarse + torch.randn(coarse.shape, generator=gen)
    logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
    return (logits + 0.5 * torch.randn(logits.shape, generator=gen))[0].softmax(0).numpy()


def photo(coco128, image_id: str, side: int = 320) -> tuple[np.ndarray, np.ndarray]:
    """A coco128 photo ``[H, W, 3]`` and its VOC mask ``[H, W]`` (ignore -> background),
    shrunk so that the longer side is ``side``."""
    image = torch.from_numpy(read_image(coco128 / "JPEGImages" / f"{image_id}.jpg"))
    mask = torch.from_numpy(read_mask(coco128 / "SegmentationClass" / f"{image_id}.png"))
    h, w = mask.shape
    size = (round(h * side / max(h, w)), round(w * side / max(h, w)))
    image = F.interpolate(image.permute(2, 0, 1)[None].float(), size=size, mode="bilinear", antialias=True)
    mask = F.interpolate(mask[None, None].float(), size=size, mode="nearest")
    image = image[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
    mask = mask[0, 0].to(torch.uint8).numpy()
    return image, np.where(mask == 255, 0, mask)


def test_torch_backend_agrees_with_pydensecrf_on_photos(coco128):
    pytest.importorskip("pydensecrf")
    ids = (coco128 / "ImageSets/Segmentation/train.txt").read_text().split()[:4]
    for seed, image_id in enumerate(ids):
        image, mask = photo(coco128, image_id)
        probs = noisy_probs(mask, 21, seed)
        want = dense_crf(image, probs, backend="pydensecrf")
        got = dense_crf(image, probs, backend="torch")
        agreement = (got.argmax(0) == want.argmax(0)).mean()
        assert agreement >= 0.99, (image_id, agreement)
        assert np.abs(got - want).max() <= 1e-4, image_id


def test_zero_iterations_is_the_softmax_of_the_negative_unary():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    probs = rng.dirichlet(np.ones(4), size=(9, 11)).transpose(2, 0, 1).astype(np.float32)
    probs[0, 0, 0] = 1e-9
    got = dense_crf(image, probs, iters=0, backend="torch")
    energy = np.log(np.clip(probs, 1e-5, 1)).astype(np.float64)
    want = np.exp(energy) / np.exp(energy).sum(0)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)


def test_uniform_image_smooths_a_noisy_label_map():
    rng = np.random.default_rng(0)
    image = np.full((40, 50, 3), 128, dtype=np.uint8)
    labels = np.where(rng.random((40, 50)) < 0.15, rng.integers(1, 3, (40, 50)), 0)
    probs = np.eye(3, dtype=np.float32)[labels].transpose(2, 0, 1) * 0.5 + 0.5 / 3
    q = dense_crf(image, probs, backend="torch")
    assert (labels != 0).mean() > 0.1
    assert (q.argmax(0) == 0).all()


def test_batch_is_per_image():
    rng = np.random.default_rng(1)
    images = torch.from_numpy(rng.integers(0, 256, (2, 12, 16, 3), dtype=np.uint8))
    probs = rng.dirichlet(np.ones(3), size=(2, 12, 16)).astype(np.float32)
    probs = torch.from_numpy(probs).permute(0, 3, 1, 2)
    batch = dense_crf_torch(images, probs, iters=4)
    for b in range(2):
        torch.testing.assert_close(batch[b], dense_crf_torch(images[b], probs[b : b + 1], iters=4)[0])


def test_read_only_and_flipped_inputs():
    """joblib hands workers read-only memory maps; a flipped view has a negative stride."""
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    probs = rng.dirichlet(np.ones(3), size=(12, 10)).transpose(2, 0, 1)
    want = dense_crf(np.ascontiguousarray(image[:, ::-1]), probs, iters=3, backend="torch")
    image.setflags(write=False)
    probs.setflags(write=False)
    np.testing.assert_array_equal(dense_crf(image[:, ::-1], probs, iters=3, backend="torch"), want)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(coco128):
    image, mask = photo(coco128, "000000000009")
    image = torch.from_numpy(image)
    probs = torch.from_numpy(noisy_probs(mask, 21, 0))[None]
    want = dense_crf_torch(image, probs)
    got = dense_crf_torch(image.cuda(), probs.cuda())
    assert got.device.type == "cuda"
    assert (got.cpu().argmax(1) == want.argmax(1)).float().mean() >= 0.999
    assert (got.cpu() - want).abs().max() <= 1e-3


def test_without_pydensecrf(monkeypatch):
    """The module imports and "auto" falls back to torch; asking for pydensecrf is a user error."""
    for name in [m for m in sys.modules if m == "pydensecrf" or m.startswith("pydensecrf.")]:
        monkeypatch.delitem(sys.modules, name)
    for name in ("pydensecrf", "pydensecrf.densecrf", "pydensecrf.utils"):
        # a None entry makes `import name` raise ImportError
        monkeypatch.setitem(sys.modules, name, None)
    spec = importlib.util.spec_from_file_location("crf_without_pydensecrf", crf.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    probs = rng.dirichlet(np.ones(3), size=(10, 12)).transpose(2, 0, 1).astype(np.float32)
    np.testing.assert_array_equal(
        module.dense_crf(image, probs, iters=3), module.dense_crf(image, probs, iters=3, backend="torch")
    )
    with pytest.raises(WsssError, match=r"pip install wsss\[pydensecrf\]"):
        module.dense_crf(image, probs, backend="pydensecrf")


def test_unknown_backend_rejected():
    with pytest.raises(ValueError, match="backend"):
        dense_crf(np.zeros((4, 4, 3), np.uint8), np.ones((1, 4, 4), np.float32), backend="cuda")
