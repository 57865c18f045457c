"""Sharded per-image stages: shards running at the same time into one workdir make
exactly what one unsharded run makes (SPEC §4, §9)."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

import pytest
from stage_runs import (
    OUTPUTS,
    assert_same_outputs,
    build_reference,
    finished_files,
    spawn,
    stage_args,
    stage_state,
    workdir_without,
)

from wsss_cli.workdir import Workdir, write_bytes

NUM_IMAGES = 16


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, Path]:
    return build_reference(tmp_path_factory.mktemp("shards"), NUM_IMAGES)


def run_shards_concurrently(args: list[str], count: int, use_slurm: bool = False,
                            slurm_first_id: int = 0, stagger_until=None) -> None:
    """Start one process per shard of ``wsss ARGS`` and wait for all; each must exit 0.

    Shards come from ``--shard I/N``, or with ``use_slurm`` from the SLURM array variables
    (``sbatch --array=F-L`` numbers tasks from F). ``stagger_until()`` (optional) is
    polled before each later shard starts, e.g. until the first one wrote an output.
    Any per-image command with ``--shard`` works here (``predict`` included).
    """
    procs = []
    for index in range(count):
        if index and stagger_until is not None:
            deadline = time.time() + 120
            while not stagger_until() and procs[0].poll() is None:
                assert time.time() < deadline
                time.sleep(0.01)
        if use_slurm:
            env = {"SLURM_ARRAY_TASK_ID": str(slurm_first_id + index),
                   "SLURM_ARRAY_TASK_MIN": str(slurm_first_id),
                   "SLURM_ARRAY_TASK_COUNT": str(count)}
            procs.append(spawn(args, env))
        else:
            procs.append(spawn([*args, "--shard", f"{index}/{count}"]))
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        assert "Traceback" not in stderr


def assert_sharded_run_equals_single_run(command: str, reference: tuple[Path, Path], target: Path,
                                         **shard_options) -> Path:
    """Run ``command`` sharded into a copy of the reference workdir without its outputs
    and compare file for file with the reference's unsharded outputs."""
    data, ref = reference
    workdir = workdir_without(ref, target, command)
    run_shards_concurrently(stage_args(command, data, workdir), **shard_options)
    folder, suffix = OUTPUTS[command]
    assert_same_outputs(workdir / folder, ref / folder, suffix, data)
    state = stage_state(workdir, command)
    assert state["status"] == "done"
    assert state["count"] == state["total"] == NUM_IMAGES
    assert state["settings_hash"] == stage_state(ref, command)["settings_hash"]
    return workdir


def test_dump_cams_shards(reference, tmp_path):
    assert_sharded_run_equals_single_run("dump-cams", reference, tmp_path / "w", count=2)


def test_make_aff_labels_shards_from_a_slurm_array(reference, tmp_path):
    # sbatch --array=1-3: task ids 1..3 are shards 0..2
    assert_sharded_run_equals_single_run("make-aff-labels", reference, tmp_path / "w", count=3,
                                         use_slurm=True, slurm_first_id=1)


def test_random_walk_shards(reference, tmp_path):
    assert_sharded_run_equals_single_run("random-walk", reference, tmp_path / "w", count=2)


def test_overwrite_with_shards_keeps_what_the_other_shard_wrote(reference, tmp_path):
    """New settings + --overwrite on every shard: the first shard clears the old outputs;
    one starting later must not clear what the first one has written meanwhile."""
    data, ref = reference
    workdir = tmp_path / "w"
    workdir_without(ref, workdir, "make-aff-labels")
    args = stage_args("make-aff-labels", data, workdir)
    run_shards_concurrently(args, count=2)
    out = workdir / "aff_labels"
    started = time.time()
    changed = [*args, "--alpha-high", "16", "--overwrite"]
    run_shards_concurrently(changed, count=2,
                            stagger_until=lambda: len(finished_files(out, ".png")) > 0)
    files = finished_files(out, ".png")
    assert len(files) == NUM_IMAGES
    assert all(p.stat().st_mtime >= started - 1 for p in files)
    state = stage_state(workdir, "make-aff-labels")
    assert state["status"] == "done" and state["count"] == NUM_IMAGES
    assert state["settings"]["alpha_high"] == 16


def test_claim_is_check_and_mark_in_one_step(tmp_path):
    wd, out = Workdir(tmp_path), tmp_path / "cams"
    digest, finished = wd.claim("dump-cams", {"scales": [1.0]}, [out], overwrite=False)
    state = wd.stage_state("dump-cams")
    assert not finished and (state["settings_hash"], state["status"]) == (digest, "running")
    write_bytes(out / "a.npz", b"x")
    wd.update_stage("dump-cams", status="done")
    assert wd.claim("dump-cams", {"scales": [1.0]}, [out], overwrite=False) == (digest, True)
    # a shard with --overwrite and the settings already claimed keeps the others' outputs
    assert wd.claim("dump-cams", {"scales": [1.0]}, [out], overwrite=True, shared=True) == (digest, True)
    assert (out / "a.npz").exists()
    # one process with --overwrite redoes everything, and the stage is not done meanwhile
    assert wd.claim("dump-cams", {"scales": [1.0]}, [out], overwrite=True) == (digest, False)
    assert not out.exists() and wd.stage_state("dump-cams")["status"] == "running"


def test_counts_are_taken_under_the_workdir_lock(tmp_path):
    wd = Workdir(tmp_path)

    def count() -> dict:
        with open(tmp_path / ".lock") as other:  # another process's view of the lock
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return {"count": 3}

    wd.update_stage("dump-cams", count, status="partial")
    assert wd.stage_state("dump-cams")["count"] == 3


def test_outputs_get_the_usual_file_mode(tmp_path):
    """Not mkstemp's private 0600: a workdir shared by a group must stay readable."""
    old = os.umask(0o022)
    try:
        write_bytes(tmp_path / "x.png", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "x.png").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("command", ["dump-cams", "random-walk"])
def test_processes_split_the_images_into_local_shards(command, reference, tmp_path):
    """``--processes 2``: one command runs two shards side by side, each on half the images,
    and writes what one unsharded run writes, under the same settings."""
    data, ref = reference
    workdir = workdir_without(ref, tmp_path / "w", command)
    proc = spawn([*stage_args(command, data, workdir), "--processes", "2"])
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    folder, suffix = OUTPUTS[command]
    assert_same_outputs(workdir / folder, ref / folder, suffix, data)
    state = stage_state(workdir, command)
    assert state["status"] == "done" and state["count"] == state["total"] == NUM_IMAGES
    assert state["settings_hash"] == stage_state(ref, command)["settings_hash"]
    log = (workdir / folder / "log.txt").read_text()
    assert log.count(f"{NUM_IMAGES // 2} images to do") == 2
