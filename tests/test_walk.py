"""The walk's rules (length, scale, presets), its two backgrounds and the CRF's power."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsss_cli import ops, walk
from wsss_cli.inference import Crf, scores_to_label
from wsss_cli.models.affinity_net import AffinityNet
from wsss_cli.models.backbones import build_backbone


def test_auto_logt_is_psa_on_voc_sized_grids_and_shorter_on_small_ones():
    assert walk.auto_logt(63, 47) == 8  # a 500 x 375 VOC image at stride 8
    assert walk.auto_logt(16, 16) == 4  # a 128 px image
    assert walk.auto_logt(2, 2) == 1
    assert walk.auto_logt(500, 500) == 10
    assert walk.auto_logt(63, 47, logt_on_voc=3) == 3
    assert walk.auto_logt(64, 64, logt_on_voc=3) == 3  # a 128 px image walked at scale 4


def test_walk_scale_upscales_only_small_images():
    assert walk.auto_walk_scale(128, 128) == 4  # 16x16 grid -> 64x64
    assert walk.auto_walk_scale(200, 300) == 3
    assert walk.auto_walk_scale(375, 500) == 1  # VOC: PSA's grid
    assert walk.auto_walk_scale(333, 500) == 1
    assert walk.auto_walk_scale(40, 300) == 4  # capped


def test_presets_keep_psa_for_imagenet_backbones():
    assert walk.walk_preset("resnet38") == dict(background="psa", alpha=16.0, bg_threshold=0.25,
                                                crf_power=1.0)
    assert walk.logt_on_voc("resnet50") == 8
    assert walk.walk_preset("tiny")["background"] == "threshold"


def test_walk_start_backgrounds():
    cams = np.zeros((2, 4, 5), np.float32)
    cams[0, 0, 0], cams[0, 1, 1] = 0.5, 0.25
    cams[1, 2, 2] = 0.8
    psa = walk.walk_start(cams, "psa", alpha=2.0, bg_threshold=0.3)
    np.testing.assert_allclose(psa[0], (1 - cams.max(axis=0)) ** 2)
    np.testing.assert_array_equal(psa[1:], cams)
    irn = walk.walk_start(cams, "threshold", alpha=2.0, bg_threshold=0.3)
    np.testing.assert_array_equal(irn[0], np.full((4, 5), 0.3, np.float32))
    np.testing.assert_allclose(irn[1], cams[0] / 0.5)
    np.testing.assert_allclose(irn[2], cams[1] / 0.8)
    assert walk.walk_start(np.zeros((0, 4, 5), np.float32), "threshold", 2.0, 0.3).shape == (1, 4, 5)


@pytest.fixture(scope="module")
def affinity_net():
    torch.manual_seed(0)
    return AffinityNet(build_backbone("tiny")).eval()


def test_threshold_walk_puts_back_a_constant_background(affinity_net):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)
    cams = rng.random((2, 40, 56)).astype(np.float32) * [[[0.5]], [[2.0]]]
    settings = walk.WalkSettings(background="threshold", alpha=8, bg_threshold=0.6, beta=8,
                                 radius=5, logt=2, scale=2)
    walked = walk.walk_scores(affinity_net, image, cams, settings, torch.device("cpu"))
    assert walked.shape == (3, 40, 56)
    np.testing.assert_array_equal(walked[0], np.float32(0.6))
    np.testing.assert_allclose(walked[1:].reshape(2, -1).max(axis=1), 1.0, rtol=1e-6)
    # the classes walk alone: the same as the PSA walk of the same CAMs, rescaled
    psa = walk.walk_scores(affinity_net, image, cams, settings.__class__(
        **{**settings.__dict__, "background": "psa"}), torch.device("cpu"))
    np.testing.assert_allclose(walked[1:], psa[1:] / psa[1:].reshape(2, -1).max(axis=1)[:, None, None],
                               rtol=1e-4, atol=1e-6)


def test_crf_power_raises_the_scores_before_the_crf():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
    scores = rng.random((3, 24, 32)).astype(np.float32)
    classes = np.array([4, 7])
    sharp = scores_to_label(image, scores, classes, Crf(iters=5), crf_power=4.0)
    probs = scores**4 / (scores**4).sum(axis=0, keepdims=True)
    want = np.array([0, 4, 7])[ops.dense_crf(image, probs.astype(np.float32), iters=5).argmax(0)]
    np.testing.assert_array_equal(sharp, want)
    plain = scores_to_label(image, scores, classes, Crf(iters=5))
    assert (plain != sharp).any()  # the power changes what the CRF makes of these scores
