"""The artifact store: atomic writes, settings hashes, shards."""

from __future__ import annotations

import pytest

from wsss_cli.errors import WsssError
from wsss_cli.workdir import Shard, Workdir, atomic_path, read_cams, write_cams


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_claim_refuses_to_mix_settings(tmp_path):
    wd = Workdir(tmp_path)
    out = tmp_path / "cams"
    digest, finished = wd.claim("dump-cams", {"scales": [1.0]}, [out], overwrite=False)
    assert not finished and wd.stage_state("dump-cams")["status"] == "running"
    out.mkdir()
    (out / "a.npz").write_bytes(b"x")
    assert wd.claim("dump-cams", {"scales": [1.0]}, [out], False)[0] == digest
    with pytest.raises(WsssError, match="--overwrite"):
        wd.claim("dump-cams", {"scales": [0.5]}, [out], overwrite=False)
    assert (out / "a.npz").exists() and wd.stage_state("dump-cams")["settings_hash"] == digest
    wd.claim("dump-cams", {"scales": [0.5]}, [out], overwrite=True)
    assert not out.exists()


def test_record_config_keeps_every_stage(tmp_path):
    wd = Workdir(tmp_path)
    wd.record_config("train-cls", {"epochs": 3, "data": tmp_path})
    wd.record_config("dump-cams", {"scales": (1.0, 0.5)})
    text = (tmp_path / "config.toml").read_text()
    assert "[train-cls]" in text and "[dump-cams]" in text and "epochs = 3" in text


def test_shards_partition_the_ids(monkeypatch):
    ids = [f"i{k}" for k in range(10)]
    parts = [Shard.parse(f"{i}/3").select(ids) for i in range(3)]
    assert sorted(sum(parts, [])) == sorted(ids)
    assert not set(parts[0]) & set(parts[1])
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "3")
    assert Shard.parse(None) == Shard(2, 3)
    for bad in ("3/3", "x", "1/0"):
        with pytest.raises(WsssError, match="--shard"):
            Shard.parse(bad)


def test_cam_files_roundtrip_and_bad_files(tmp_path):
    import numpy as np

    cams = np.random.default_rng(0).random((2, 5, 7)).astype(np.float32)
    write_cams(tmp_path / "a.npz", np.array([3, 9]), cams)
    classes, back = read_cams(tmp_path / "a.npz")
    assert classes.tolist() == [3, 9]
    np.testing.assert_allclose(back, cams, atol=1e-3)
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    with pytest.raises(WsssError, match="not a readable CAM file"):
        read_cams(tmp_path / "bad.npz")
