"""The shared training loop: what the step function is told, resuming, the epoch hook."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from wsss_cli.errors import WsssError
from wsss_cli.runtime import Runtime
from wsss_cli.training import LoopConfig, StepContext, fit

_SIZE, _BATCH = 12, 4  # 3 steps per epoch


class _Data(torch.utils.data.Dataset):
    """``set[(epoch, i)]`` -> (image, target, the epoch the sampler asked for)."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.xs, self.ys = torch.randn(_SIZE, 3, 8, 8, generator=g), torch.rand(_SIZE, 4, generator=g)

    def __len__(self) -> int:
        return _SIZE

    def __getitem__(self, key: tuple[int, int]):
        epoch, i = key
        return self.xs[i], self.ys[i], torch.tensor(epoch)


def _model() -> tuple[nn.Module, list[dict]]:
    torch.manual_seed(0)
    body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten())
    head = nn.Linear(8, 4)
    groups = [{"params": list(body.parameters()), "lr": 0.05, "base_lr": 0.05},
              {"params": list(head.parameters()), "lr": 0.5, "base_lr": 0.5}]
    return nn.Sequential(body, head), groups


def _fit(out: Path, step, epochs: int = 2, resume: bool = False, on_epoch_end=None) -> nn.Module:
    model, groups = _model()
    cfg = LoopConfig(epochs=epochs, batch_size=_BATCH, lr=0.05, weight_decay=1e-4, workers=0,
                     resume=resume)
    fit(model, groups, _Data(), step, cfg, out, Runtime(device="cpu", quiet=True),
        {"backbone": "test", "num_classes": 5}, logging.getLogger("test"), on_epoch_end)
    return model


class _Recorder:
    """A step function that keeps every context it is given (and can fail at one step)."""

    def __init__(self, nan_at: int | None = None):
        self.seen: list[StepContext] = []
        self.nan_at = nan_at

    def __call__(self, net: nn.Module, batch: list[torch.Tensor], ctx: StepContext) -> torch.Tensor:
        images, targets, epochs = batch
        assert (epochs == ctx.epoch).all()  # the samples were drawn for ctx's epoch
        self.seen.append(ctx)
        loss = nn.functional.mse_loss(net(images), targets)
        return loss * float("nan") if ctx.step == self.nan_at else loss


def test_step_function_is_told_the_epoch_and_step(tmp_path):
    step = _Recorder()
    hooked = []
    _fit(tmp_path, step, epochs=3, on_epoch_end=lambda epoch, model: hooked.append(epoch) or {})
    assert [(c.epoch, c.step) for c in step.seen] == [
        (0, 0), (0, 1), (0, 2), (1, 3), (1, 4), (1, 5), (2, 6), (2, 7), (2, 8)]
    assert {(c.steps_per_epoch, c.epochs, c.total_steps) for c in step.seen} == {(3, 3, 9)}
    assert {c.device for c in step.seen} == {torch.device("cpu")}
    with pytest.raises(AttributeError):  # frozen
        step.seen[0].epoch = 5
    assert hooked == [1, 2, 3]  # the epoch hook counts from 1, as metrics.jsonl
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["step"]) for r in records] == [(1, 3), (2, 6), (3, 9)]
    assert (tmp_path / "model.pt").exists()


def test_a_resumed_run_continues_the_count_and_ends_with_the_same_weights(tmp_path):
    straight = _fit(tmp_path / "a", _Recorder())

    with pytest.raises(WsssError, match="epoch 2 step 4"):  # the first step of epoch 2
        _fit(tmp_path / "b", _Recorder(nan_at=3))
    assert torch.load(tmp_path / "b/last.pt", weights_only=True)["epoch"] == 1
    step = _Recorder()
    resumed = _fit(tmp_path / "b", step, resume=True)
    assert [(c.epoch, c.step) for c in step.seen] == [(1, 3), (1, 4), (1, 5)]
    for key, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=0, atol=0, msg=key)
