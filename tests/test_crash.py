"""Crash safety (SPEC §8): a per-image stage killed with SIGKILL part-way and run again
completes the work with no lost, truncated or different file. (Training: see
test_stages.py, killed after epoch 1 and resumed == uninterrupted.)"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from stage_runs import (
    OUTPUTS,
    assert_same_outputs,
    build_reference,
    finished_files,
    invoke,
    spawn,
    stage_args,
    stage_state,
    workdir_without,
)

NUM_IMAGES = 24  # enough work that the kill lands part-way


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, Path]:
    return build_reference(tmp_path_factory.mktemp("crash"), NUM_IMAGES)


def kill_part_way(args: list[str], folder: Path, suffix: str) -> int:
    """Start ``wsss ARGS``, SIGKILL it as soon as its first output appears; returns how
    many outputs existed then."""
    proc = spawn(args)
    deadline = time.time() + 180
    while not finished_files(folder, suffix):
        assert proc.poll() is None, f"the stage ended before it could be killed: {proc.stderr.read()}"
        assert time.time() < deadline
        time.sleep(0.002)
    proc.kill()
    proc.communicate()
    return len(finished_files(folder, suffix))


@pytest.mark.parametrize("command", ["dump-cams", "make-aff-labels", "random-walk"])
def test_killed_stage_rerun_completes_with_identical_outputs(reference, tmp_path, command):
    data, ref = reference
    workdir = workdir_without(ref, tmp_path / "w", command)
    folder, suffix = OUTPUTS[command]
    args = stage_args(command, data, workdir)
    done_at_kill = kill_part_way(args, workdir / folder, suffix)
    assert 0 < done_at_kill < NUM_IMAGES
    assert stage_state(workdir, command)["status"] == "running"

    invoke(args)
    assert_same_outputs(workdir / folder, ref / folder, suffix, data)
    # a file the kill interrupted can only remain as a hidden temporary, never as an output
    leftovers = [p.name for p in (workdir / folder).iterdir()
                 if p.name != "log.txt" and p not in finished_files(workdir / folder, suffix)]
    assert all(re.fullmatch(r"\..+\.tmp", name) for name in leftovers), leftovers
    state = stage_state(workdir, command)
    assert state["status"] == "done" and state["count"] == NUM_IMAGES
    log = (workdir / folder / "log.txt").read_text()
    assert f"{NUM_IMAGES - done_at_kill} images to do" in log
