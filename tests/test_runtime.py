"""What a stage knows of its surroundings: progress without a terminal, the machine facts
recorded beside every result."""

from __future__ import annotations

import json
import subprocess
import sys

import torch
from stage_runs import invoke, stage_args

from wsss_cli import runtime
from wsss_cli.data.toy import make_toy_dataset
from wsss_cli.runtime import Runtime, environment


def test_progress_without_a_terminal_logs_a_line_every_30_seconds(monkeypatch, capsys):
    clock = iter(range(0, 1000, 10))  # each image takes 10 s
    monkeypatch.setattr(runtime.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(runtime.sys.stderr, "isatty", lambda: False, raising=False)
    items = list(Runtime().progress(list(range(10)), "dump-cams"))
    assert items == list(range(10))
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["[dump-cams] 3/10 (0.10/s, 1 min 10 s left)",
                     "[dump-cams] 6/10 (0.10/s, 40 s left)",
                     "[dump-cams] 9/10 (0.10/s, 10 s left)"]


def test_quiet_progress_says_nothing(capsys):
    assert list(Runtime(quiet=True).progress(range(3), "x")) == [0, 1, 2]
    assert capsys.readouterr().err == ""


def test_environment_names_what_moves_floats_between_machines(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    facts = environment()
    assert facts["threads"] == torch.get_num_threads()
    assert facts["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert facts["libraries"]["torch"] == torch.__version__
    assert {"numpy", "opencv-contrib-python-headless"} <= set(facts["libraries"])
    assert facts["variables"] == {"OMP_NUM_THREADS": "2"} and facts["cpu"]


def test_every_stage_run_records_its_environment(tmp_path):
    data, work = tmp_path / "toy", tmp_path / "w"
    make_toy_dataset(data, num_train=8, num_val=2, size=48)
    invoke(stage_args("train-cls", data, work))
    invoke(stage_args("dump-cams", data, work))
    state = json.loads((work / "state.json").read_text())
    for stage in ("train-cls", "dump-cams"):
        assert state[stage]["environment"]["threads"] == 1  # invoke runs on one thread
        assert state[stage]["environment"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()


def test_the_same_run_beside_a_cpu_hog_writes_the_same_files(tmp_path):
    """Same machine, same settings -> the same bytes, idle or loaded (torch's default
    threads, as a user runs it)."""
    data = tmp_path / "toy"
    make_toy_dataset(data, num_train=8, num_val=2, size=48)
    for name, hog in (("idle", False), ("loaded", True)):
        busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(hog)]
        try:
            for command in ("train-cls", "dump-cams"):
                args = [a for a in stage_args(command, data, tmp_path / name) if a != "--quiet"]
                done = subprocess.run([sys.executable, "-m", "wsss_cli", "--quiet", "--device", "cpu",
                                       *args], capture_output=True, text=True, timeout=600)
                assert done.returncode == 0, done.stderr[-2000:]
        finally:
            for process in busy:
                process.kill()
    idle = torch.load(tmp_path / "idle/cls/model.pt", weights_only=True)["model"]
    loaded = torch.load(tmp_path / "loaded/cls/model.pt", weights_only=True)["model"]
    assert all(torch.equal(idle[k], loaded[k]) for k in idle)
    cams = sorted((tmp_path / "idle/cams").glob("*.npz"))
    assert len(cams) == 8
    for path in cams:
        assert path.read_bytes() == (tmp_path / "loaded/cams" / path.name).read_bytes()
