"""DistributedDataParallel under torchrun: 2 CPU processes with gloo.

The training loop is checked three ways: the sampler's rank split, the ranks ending with
identical weights equal to a single process at the same global batch, and the real CLI
under torchrun (files written once, half the steps, the same decisions on every rank).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from wsss_cli.data.toy import make_toy_dataset
from wsss_cli.models.backbones import build_backbone, freeze_batchnorm
from wsss_cli.training import Dist, EpochSampler, sync_batchnorm


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def torchrun(*args: str, cwd: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node 2 ARGS`` with this interpreter's torch."""
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         *args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("size", [16, 17, 5])
def test_epoch_sampler_splits_one_permutation_between_ranks(size):
    full = [i for _, i in EpochSampler(size, seed=3, dist_info=Dist())]
    assert sorted(full) == list(range(size))
    shards = []
    for rank in range(2):
        sampler = EpochSampler(size, seed=3, dist_info=Dist(rank=rank, world=2))
        items = list(sampler)
        assert len(items) == len(sampler) == size // 2
        assert {e for e, _ in items} == {0}
        shards.append([i for _, i in items])
    assert not set(shards[0]) & set(shards[1])
    # rank r takes positions r, r + 2, ... of the single-process order, tail dropped
    usable = size - size % 2
    assert shards[0] == full[0:usable:2] and shards[1] == full[1:usable:2]
    other_epoch = EpochSampler(size, seed=3, dist_info=Dist())
    other_epoch.epoch = 1
    assert [i for _, i in other_epoch] != full


def test_sync_batchnorm_keeps_frozen_layers_and_shares_parameters():
    trained, frozen = build_backbone("tiny"), build_backbone("tiny")
    freeze_batchnorm(frozen)
    model = nn.ModuleDict({"trained": trained, "frozen": frozen})
    params = {id(p) for p in model.parameters()}
    model = sync_batchnorm(model)
    assert {id(p) for p in model.parameters()} == params  # optimizer groups stay valid
    kinds = lambda m: {type(x).__name__ for x in m.modules() if "BatchNorm" in type(x).__name__}  # noqa: E731
    assert kinds(model["trained"]) == {"SyncBatchNorm"}
    assert "SyncBatchNorm" not in kinds(model["frozen"])
    model.train()
    bns = [m for m in model["frozen"].modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)


# Launched by torchrun (2 ranks) and by plain python (1 rank, the reference): a BN-free
# net, so that 2 ranks x batch B and 1 process x batch 2B see the same images per step
# (rank r takes every 2nd position of one permutation) and must descend the same mean.
_FIT_SCRIPT = textwrap.dedent("""
    import logging, sys
    from pathlib import Path
    import torch
    from torch import nn
    from wsss_cli.runtime import Runtime
    from wsss_cli.training import Dist, LoopConfig, fit

    out, batch = Path(sys.argv[1]), int(sys.argv[2])
    g = torch.Generator().manual_seed(0)
    xs, ys = torch.randn(24, 3, 8, 8, generator=g), torch.rand(24, 4, generator=g)

    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return 24
        def __getitem__(self, key):
            epoch, i = key
            return xs[i] * (1 + 0.1 * epoch), ys[i]

    torch.manual_seed(0)
    body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten())
    head = nn.Linear(8, 4)
    model = nn.Sequential(body, head)
    groups = [{"params": list(body.parameters()), "lr": 0.05, "base_lr": 0.05},
              {"params": list(head.parameters()), "lr": 0.5, "base_lr": 0.5}]
    step = lambda net, b, ctx: nn.functional.mse_loss(net(b[0]), b[1])
    cfg = LoopConfig(epochs=2, batch_size=batch, lr=0.05, weight_decay=1e-4, workers=0)
    fit(model, groups, Data(), step, cfg, out, Runtime(device="cpu", quiet=True),
        {"backbone": "test", "num_classes": 5}, logging.getLogger("test"))
    torch.save(model.state_dict(), out / f"rank{Dist.from_env().rank}.pt")
""")


def test_ranks_end_identical_and_equal_one_process_with_the_global_batch(tmp_path):
    script = tmp_path / "fit_script.py"
    script.write_text(_FIT_SCRIPT)
    (tmp_path / "ddp").mkdir()
    (tmp_path / "single").mkdir()
    result = torchrun(str(script), str(tmp_path / "ddp"), "3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    single = subprocess.run([sys.executable, str(script), str(tmp_path / "single"), "6"],
                            env=_env(), capture_output=True, text=True, timeout=120)
    assert single.returncode == 0, single.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / f"ddp/rank{r}.pt", weights_only=True) for r in (0, 1))
    reference = torch.load(tmp_path / "single/rank0.pt", weights_only=True)
    saved = torch.load(tmp_path / "ddp/model.pt", weights_only=True)["model"]
    for key, value in rank0.items():
        torch.testing.assert_close(rank1[key], value, rtol=0, atol=0, msg=key)
        torch.testing.assert_close(saved[key], value, rtol=0, atol=0, msg=key)
        torch.testing.assert_close(value, reference[key], rtol=1e-4, atol=1e-6, msg=key)
    steps = [json.loads(line)["step"] for line in (tmp_path / "ddp/metrics.jsonl").open()]
    assert steps == [4, 8]  # 24 images / (2 ranks x 3)


def _train_cls_args(data: Path, workdir: Path, epochs: int = 2) -> list[str]:
    return ["-m", "wsss_cli", "--device", "cpu", "--quiet", "train-cls", "--data", str(data),
            "--workdir", str(workdir), "--backbone", "tiny", "--epochs", str(epochs),
            "--batch-size", "4", "--crop-size", "64", "--resize-long", "48", "80", "--workers", "0"]


def test_train_cls_under_torchrun_writes_once_and_ranks_agree(tmp_path):
    data = tmp_path / "toy"
    make_toy_dataset(data, num_train=16, num_val=4, size=64)
    workdir = tmp_path / "w"
    result = torchrun(*_train_cls_args(data, workdir), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    cls = workdir / "cls"
    assert sorted(p.name for p in cls.iterdir()) == ["last.pt", "log.txt", "metrics.jsonl", "model.pt"]
    assert not list(workdir.rglob("*.tmp"))
    records = [json.loads(line) for line in (cls / "metrics.jsonl").read_text().splitlines()]
    # 16 images, 2 ranks x batch 4: 2 steps per epoch (one process: 4)
    assert [(r["epoch"], r["step"]) for r in records] == [(1, 2), (2, 4)]
    log = (cls / "log.txt").read_text()
    assert log.count("wsss 0.1.0 train-cls") == 1 and log.count("epoch 2/2") == 1
    assert "2 processes (gloo) x batch 4 = 8 images per step" in log
    state = json.loads((workdir / "state.json").read_text())
    assert state["train-cls"]["status"] == "done"
    assert "[train-cls]" in (workdir / "config.toml").read_text()
    meta = torch.load(cls / "model.pt", weights_only=True)["meta"]
    assert meta["backbone"] == "tiny" and meta["num_classes"] == 6

    # finished with these settings: every rank skips training (none waits for the other)
    stamp = (cls / "model.pt").stat().st_mtime_ns
    again = torchrun(*_train_cls_args(data, workdir), cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (cls / "model.pt").stat().st_mtime_ns == stamp
    assert (cls / "log.txt").read_text().count("already trained") == 1

    # rank 0 finds the workdir made with other settings: both ranks stop with its message
    refused = torchrun(*_train_cls_args(data, workdir, epochs=3), cwd=tmp_path, timeout=120)
    assert refused.returncode != 0
    assert refused.stderr.count("pass --overwrite to replace it") == 2
    assert (cls / "model.pt").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_torchrun_job_killed_after_an_epoch_resumes_to_the_same_weights(tmp_path):
    data = tmp_path / "toy"
    make_toy_dataset(data, num_train=16, num_val=4, size=64)
    straight = torchrun(*_train_cls_args(data, tmp_path / "a"), cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr[-3000:]

    workdir = tmp_path / "b"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    job = subprocess.Popen([*launcher, *_train_cls_args(data, workdir)], cwd=tmp_path, env=_env(),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    metrics = workdir / "cls" / "metrics.jsonl"
    deadline = time.time() + 240
    while not (metrics.exists() and metrics.read_text().strip()) and job.poll() is None:
        assert time.time() < deadline
        time.sleep(0.05)
    os.killpg(job.pid, signal.SIGKILL)  # the launcher and both ranks at once
    job.wait()
    assert torch.load(workdir / "cls/last.pt", weights_only=True)["epoch"] == 1
    assert not (workdir / "cls/model.pt").exists()

    resumed = torchrun(*_train_cls_args(data, workdir), "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = torch.load(tmp_path / "a/cls/model.pt", weights_only=True)["model"]
    b = torch.load(workdir / "cls/model.pt", weights_only=True)["model"]
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0, msg=key)
    assert [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()] == [1, 2]
