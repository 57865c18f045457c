"""train-seg --loss: the loss registry, SEC's training (seed cues, CRF target, schedule)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from wsss_cli import ops
from wsss_cli.cli import main
from wsss_cli.data.augment import denormalize, normalize
from wsss_cli.data.dataset import VocDataset
from wsss_cli.data.io import write_palette_png
from wsss_cli.data.loaders import SeedSet
from wsss_cli.data.toy import make_toy_dataset
from wsss_cli.models.kinds import SEGMENTATION, load_model
from wsss_cli.models.segmentation import LargeFov
from wsss_cli.runtime import Runtime
from wsss_cli.seg_losses import SEG_LOSSES
from wsss_cli.seg_losses.sec import MIN_PROB, crf_probs, renormalized, seed_cues
from wsss_cli.stages import train_seg
from wsss_cli.training import LoopConfig, lr_scale

QUIET = Runtime(device="cpu", quiet=True)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    make_toy_dataset(root, num_train=8, num_val=2, size=48)
    return root


def test_step_schedule_drops_tenfold_at_each_phase():
    loop = LoopConfig(epochs=1, batch_size=1, lr=1e-3, weight_decay=0, lr_phases=4)
    assert [lr_scale(loop, s, 8000) for s in (0, 1999, 2000, 4000, 7999)] == pytest.approx(
        [1, 1, 0.1, 0.01, 0.001])
    poly = LoopConfig(epochs=1, batch_size=1, lr=1e-3, weight_decay=0)
    assert lr_scale(poly, 50, 100) == pytest.approx(0.5 ** 0.9)


def test_seed_cues_are_one_hot_on_the_output_grid_and_empty_where_unknown():
    seeds = torch.tensor([[[0, 0, 2, 2], [0, 0, 2, 2], [255, 255, 1, 1], [255, 255, 1, 1]]])
    cues = seed_cues(seeds, 3, (2, 2))
    assert cues.shape == (1, 3, 2, 2)
    assert cues[0].argmax(0).tolist() == [[0, 2], [0, 1]]
    assert cues[0, :, 1, 0].sum() == 0  # unknown: no cue at all
    assert cues.sum(1).max() == 1


def test_crf_target_follows_the_image_and_is_a_clipped_distribution():
    # left half dark, right half bright; the scores say class 1 on the left except one
    # pixel, which the CRF should give back to its side
    image = np.zeros((16, 16, 3), np.uint8)
    image[:, 8:] = 255
    probs = torch.full((1, 2, 16, 16), 0.1)
    probs[0, 0, :, 8:] = 0.9
    probs[0, 1, :, :8] = 0.9
    probs[0, :, 5, 3] = torch.tensor([0.55, 0.45])
    out = crf_probs(torch.from_numpy(normalize(image))[None], probs)
    assert out.shape == probs.shape
    assert torch.allclose(out.sum(1), torch.ones(1, 16, 16), atol=1e-5)
    assert out.min() >= MIN_PROB / (1 + 2 * MIN_PROB)
    assert out[0].argmax(0)[5, 3] == 1
    assert (out[0].argmax(0)[:, :8] == 1).all() and (out[0].argmax(0)[:, 8:] == 0).all()


def test_denormalize_inverts_normalize():
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    assert np.array_equal(denormalize(normalize(image)), image)


def test_seed_set_resizes_the_whole_image_and_flips_seeds_with_it(toy, tmp_path):
    data = VocDataset(toy)
    ids = data.ids("train")
    for image_id in ids:  # seeds = the ground truth: they must stay aligned with the image
        write_palette_png(tmp_path / f"{image_id}.png", data.read_mask(image_id))
    dataset = SeedSet(data, ids, tmp_path, 32, seed=0)
    flips = 0
    for epoch in range(2):
        for i, image_id in enumerate(ids):
            image, seeds, labels = dataset[(epoch, i)]
            assert image.shape == (3, 32, 32) and seeds.shape == (32, 32)
            assert labels.tolist() == data.label_vector(image_id).tolist()
            mask = torch.from_numpy(data.read_mask(image_id)[None, None].astype(np.float32))
            plain = torch.nn.functional.interpolate(mask, (32, 32), mode="nearest")[0, 0].numpy()
            flipped = not np.array_equal(seeds, plain)
            flips += flipped
            assert np.array_equal(seeds, plain[:, ::-1] if flipped else plain)
    assert 0 < flips < 2 * len(ids)


def test_sec_step_trains_through_seed_expand_and_constrain():
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 3, 3, padding=1)
    images = torch.randn(2, 3, 16, 16)
    seeds = torch.full((2, 16, 16), 255, dtype=torch.long)
    seeds[:, :4, :4], seeds[0, 8:, 8:], seeds[1, 8:, 8:] = 0, 1, 2
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = SEG_LOSSES.get("sec").step(None, net, [images, seeds, labels], None)
    probs = renormalized(torch.softmax(net(images), 1))
    cues = seed_cues(seeds, 3, (16, 16))
    want = (ops.sec_seed_loss(probs, cues) + ops.sec_expand_loss(probs, labels)
            + ops.sec_constrain_loss(probs, crf_probs(images, probs)))
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)
    loss.backward()
    assert net.weight.grad.abs().sum() > 0


def test_sec_presets_are_secs_schedule_and_cross_entropy_keeps_deeplabs(toy, tmp_path):
    def resolved(**kw):
        return train_seg.resolved(train_seg.TrainSegConfig(data=toy, workdir=tmp_path, **kw))

    sec = resolved(loss="sec", backbone="resnet38")
    assert (sec.head, sec.batch_size, sec.lr, sec.lr_phases, sec.epochs, sec.pseudo) == (
        "largefov", 15, 1e-3, 4, 12, "seeds")
    assert sec.loop().lr_phases == 4
    ce = resolved(backbone="resnet38")
    assert (ce.head, ce.batch_size, ce.lr, ce.lr_phases, ce.pseudo) == ("aspp", 10, 2.5e-4, None, "pseudo")
    assert ce.loop().lr_phases == 0
    tiny = resolved(loss="sec", backbone="tiny")
    assert (tiny.head, tiny.refine) == ("largefov", False)


@pytest.mark.integration
def test_train_seg_loss_sec_runs_on_seeds_then_predicts(toy, tmp_path):
    work = tmp_path / "w"
    run = CliRunner().invoke
    common = ["--data", str(toy), "--workdir", str(work)]
    missing = run(main, ["--quiet", "train-seg", *common, "--backbone", "tiny", "--loss", "sec"])
    assert missing.exit_code == 2 and "make-seeds" in missing.output
    assert not (work / "seg").exists()
    for args in (["train-cls", "--backbone", "tiny", "--epochs", "1", "--batch-size", "4", "--workers", "0"],
                 ["dump-cams", "--scales", "1", "--workers", "0"],
                 ["make-seeds"],
                 ["train-seg", "--backbone", "tiny", "--loss", "sec", "--epochs", "2",
                  "--batch-size", "4", "--crop-size", "48", "--workers", "0"],
                 ["predict", "--split", "val", "--workers", "0"]):
        result = run(main, ["--quiet", "--device", "cpu", args[0], *common, *args[1:]])
        assert result.exit_code == 0, result.output
    model, _ = load_model(work / "seg" / "model.pt", (SEGMENTATION,), 6)
    assert isinstance(model.head[0], LargeFov)
    history = [line for line in (work / "seg" / "metrics.jsonl").read_text().splitlines() if line]
    assert len(history) == 2
    assert len(list((work / "pred" / "val").glob("*.png"))) == 2


def test_cross_entropy_weighs_each_class_by_class_weights(toy, tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 6, 1)
    images = torch.randn(2, 3, 8, 8)
    labels = torch.randint(0, 6, (2, 8, 8))
    labels[0, :2] = 255
    ce = SEG_LOSSES.get("ce")
    plain = train_seg.TrainSegConfig(data=toy, workdir=tmp_path, backbone="tiny")
    weighted = train_seg.TrainSegConfig(data=toy, workdir=tmp_path, backbone="tiny",
                                        class_weights=(1, 2, 1, 1, 3, 1))
    logits = net(images)
    assert ce.step(plain, net, [images, labels], None).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, labels, ignore_index=255).item())
    want = torch.nn.functional.cross_entropy(logits, labels, ignore_index=255,
                                             weight=torch.tensor([1.0, 2, 1, 1, 3, 1]))
    assert ce.step(weighted, net, [images, labels], None).item() == pytest.approx(want.item())
    result = CliRunner().invoke(main, ["--device", "cpu", "--quiet", "train-seg", "--data", str(toy),
                                       "--workdir", str(tmp_path), "--backbone", "tiny",
                                       "--class-weights", "1,2", "--labels", str(toy / "SegmentationClass")])
    assert result.exit_code == 2 and "--class-weights: 2 weights for 6 classes" in result.output
    assert not (tmp_path / "seg").exists()

