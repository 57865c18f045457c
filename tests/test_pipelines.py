"""pipelines/: every script parses, and every `wsss COMMAND --option` it runs (or shows in
its comments) exists in the CLI, so the scripts cannot silently rot as options change."""

from __future__ import annotations

import base64
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import click
import pytest

from wsss_cli.cli import main

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"
SCRIPTS = sorted(p for p in PIPELINES.rglob("*") if p.suffix in (".sh", ".sbatch"))
GLOBAL_WITH_VALUE = {"--config", "--device", "--seed"}
SHELL_OPERATORS = {"|", "||", "&&", ";", "&", ">", ">>", "<", "2>", "2>&1", ")", "}"}


def _is_launcher(token: str) -> bool:
    """A word after which a wsss command follows: the CLI itself, `python -m wsss_cli`,
    the scripts' torchrun wrapper, or a SLURM job script taking the command as arguments."""
    return token.rsplit("/", 1)[-1] in ("wsss", "wsss_cli", "wsss_train") or token.endswith(".sbatch")


def _logical_lines(text: str) -> list[str]:
    """Lines with continuations joined; of the comments, the example command lines."""
    lines = []
    for line in text.replace("\\\n", " ").splitlines():
        line = line.strip()
        if line.startswith("#"):
            line = line.lstrip("#").strip()
            first = line.split(" ", 1)[0]
            if first not in ("wsss", "sbatch", "torchrun", "python", "python3") and not _is_launcher(first):
                continue  # prose
        lines.append(line)
    return lines


def _tokens(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError:  # prose with an apostrophe
        return line.split()


def _option_names(command: click.Command) -> set[str]:
    names = {"--help", "-h"}
    for param in command.params:
        if isinstance(param, click.Option):
            names.update(param.opts, param.secondary_opts)
    return names


def wsss_calls(text: str) -> list[tuple[str, list[str]]]:
    """``(command, option names)`` of every wsss invocation in a script's text; a command
    given as a shell variable (e.g. "$@") is left out."""
    calls = []
    for line in _logical_lines(text):
        tokens = _tokens(line)
        for i, token in enumerate(tokens):
            if not _is_launcher(token):
                continue
            j = i + 1
            while j < len(tokens) and tokens[j].startswith("--") and tokens[j].split("=")[0] in (
                    GLOBAL_WITH_VALUE | {"--quiet"}):
                j += 1 if tokens[j] == "--quiet" or "=" in tokens[j] else 2
            if j >= len(tokens) or tokens[j].startswith("$") or tokens[j] in SHELL_OPERATORS:
                continue
            options = []
            for word in tokens[j + 1:]:
                if word in SHELL_OPERATORS:
                    break
                if word.startswith("-") and not word.startswith("-$") and word != "-":
                    options.append(word.split("=")[0])
            calls.append((tokens[j], options))
    return calls


def cli_problems(text: str) -> list[str]:
    problems = []
    for command, options in wsss_calls(text):
        if command not in main.commands:
            problems.append(f"unknown command {command!r}")
            continue
        known = _option_names(main.commands[command])
        problems += [f"{command}: unknown option {o}" for o in options if o not in known]
    return problems


def test_the_scripts_are_there():
    names = {str(p.relative_to(PIPELINES)) for p in SCRIPTS}
    assert {"toy.sh", "psa_voc12.sh", "seam_voc12.sh", "single_stage_voc12.sh", "ial_voc12.sh",
            "slurm/train.sbatch",
            "slurm/stage.sbatch", "slurm/submit_psa.sh", "slurm/submit_seam.sh"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(PIPELINES)))
def test_script_parses_and_uses_only_real_commands_and_options(script):
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
    assert os.access(script, os.X_OK)
    assert cli_problems(text) == []
    # a script either calls wsss or hands over to another pipeline script next to it
    delegate = re.search(r'exec "\$\(dirname "\$\{BASH_SOURCE\[0\]\}"\)/([\w.]+\.sh)"', text)
    assert wsss_calls(text) or (delegate and (script.parent / delegate.group(1)) in SCRIPTS), \
        "no wsss command found: the checker would miss rot here"


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_scripts_are_shellcheck_clean():
    result = subprocess.run(["shellcheck", *map(str, SCRIPTS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_the_checker_catches_rot():
    text = ("wsss train-cls --data d --epochs 3 --epoch 3\n"
            "wsss dump-cam --data d\n"
            "# sbatch --array=0-3 stage.sbatch random-walk --no-crf --crf-iter 5\n"
            "torchrun --nproc_per_node 2 -m wsss_cli --device cpu train-aff \\\n    --sync-bn --syncbn\n"
            'wsss "$@"\n')
    assert cli_problems(text) == ["train-cls: unknown option --epoch", "unknown command 'dump-cam'",
                                  "random-walk: unknown option --crf-iter",
                                  "train-aff: unknown option --syncbn"]


def _fake_bin(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!/usr/bin/env bash\n{body}\n")
    path.chmod(0o755)


@pytest.mark.parametrize(("submit", "method"), [("submit_psa.sh", "cam"), ("submit_seam.sh", "seam")])
def test_submit_psa_chains_the_jobs(tmp_path, submit, method):
    """With a stand-in sbatch: every job depends on the one before, per-image stages are
    arrays, training goes through train.sbatch (torchrun)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "sbatch.log"
    _fake_bin(bin_dir, "sbatch", f'n=$(( $(wc -l < "{log}" 2>/dev/null || echo 0) + 100 ))\n'
                                 f'printf "%s\\0" "$@" | base64 -w0 >> "{log}"; echo >> "{log}"; echo "$n"')
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SHARDS": "4"}
    result = subprocess.run(["bash", str(PIPELINES / "slurm" / submit), str(tmp_path / "voc"),
                             str(tmp_path / "work"), str(tmp_path / "res38.pth")],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    jobs = [base64.b64decode(line).decode().split("\0")[:-1] for line in log.read_text().split()]
    commands = []
    for n, args in enumerate(jobs):
        script = next(i for i, a in enumerate(args) if a.endswith(".sbatch"))
        options, (job_script, command, *rest) = args[:script], args[script:]
        commands.append(command)
        assert "--parsable" in options
        assert (f"--dependency=afterok:{99 + n}" in options) == (n > 0)
        per_image = command in ("dump-cams", "make-aff-labels", "random-walk", "predict")
        assert ("--array=0-3" in options) == per_image
        assert job_script.endswith("train.sbatch" if command.startswith("train-") else "stage.sbatch")
        assert cli_problems(shlex.join(["wsss", command, *rest])) == []
        if command == "train-cls":
            assert rest[rest.index("--method") + 1] == method
    assert commands == ["train-cls", "dump-cams", "make-aff-labels", "train-aff", "random-walk",
                        "train-seg", "predict", "eval"]


def _run_with_stand_ins(tmp_path: Path, script: str, env: dict[str, str]) -> tuple[list[str], list, dict]:
    """Run a VOC pipeline script with stand-in wsss and torchrun that log their calls;
    returns the calls, (launcher, command) of each, and the environment it ran with."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    _fake_bin(bin_dir, "wsss", f'echo "wsss $*" >> "{log}"')
    _fake_bin(bin_dir, "torchrun", f'echo "torchrun $*" >> "{log}"')
    weights = tmp_path / "res38.pth"
    weights.write_bytes(b"")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", **env}
    result = subprocess.run(["bash", str(PIPELINES / script), "voc", "work", str(weights)],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    return calls, [(c.split()[0], next(w for w in c.split() if w in main.commands)) for c in calls], env


@pytest.mark.parametrize(("script", "method"), [("psa_voc12.sh", "cam"), ("seam_voc12.sh", "seam")])
def test_psa_script_runs_training_under_torchrun_with_nproc(tmp_path, script, method):
    """With stand-in wsss and torchrun: the stages in order, training through torchrun."""
    calls, launched, env = _run_with_stand_ins(tmp_path, script, {"NPROC": "2", "JOBS": "3"})
    assert launched == [("torchrun", "train-cls"), ("wsss", "dump-cams"), ("wsss", "eval-cams"),
                        ("wsss", "make-aff-labels"), ("torchrun", "train-aff"), ("wsss", "random-walk"),
                        ("wsss", "eval"), ("torchrun", "train-seg"), ("wsss", "predict"), ("wsss", "eval")]
    assert all("--nproc_per_node 2 -m wsss_cli" in c for c in calls if c.startswith("torchrun"))
    assert f"--method {method} " in calls[0]
    missing = subprocess.run(["bash", str(PIPELINES / script), "voc", "work"],
                             env={**env, "RES38_WEIGHTS": ""}, capture_output=True, text=True)
    assert missing.returncode == 2 and "RES38_WEIGHTS" in missing.stderr


def test_ial_script_scores_every_round(tmp_path):
    """With stand-in wsss and torchrun: IAL's rounds in make-pseudo, one eval per round."""
    calls, launched, _ = _run_with_stand_ins(tmp_path, "ial_voc12.sh", {"NPROC": "2", "ROUNDS": "3"})
    weights = tmp_path / "res38.pth"
    assert launched == [("torchrun", "train-cls"), ("wsss", "make-pseudo"), *[("wsss", "eval")] * 3,
                        ("torchrun", "train-seg"), ("wsss", "predict"), ("wsss", "eval")]
    assert "--method ial --rounds 3 " in calls[1] and "--pretrained " + str(weights) in calls[1]
    assert [c.split("--pred ")[1].split()[0] for c in calls[2:5]] == \
        [f"work/ial/round{k}/labels" for k in (1, 2, 3)]


def test_dockerfile_copies_what_exists_and_runs_wsss_as_a_user():
    root = PIPELINES.parent
    lines = [ln.strip() for ln in (root / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    instructions = [(ln.split()[0], ln.split(maxsplit=1)[1]) for ln in lines]
    assert instructions[0][0] == "FROM" and instructions[0][1].startswith("nvidia/cuda:")
    assert "runtime" in instructions[0][1]
    ignored = {ln.strip() for ln in (root / ".dockerignore").read_text().splitlines()
               if ln.strip() and not ln.startswith("#")}
    for sources in (args.split()[:-1] for kind, args in instructions if kind == "COPY"):
        for source in sources:
            assert (root / source).exists() and source.rstrip("/") not in ignored, source
    users = [args for kind, args in instructions if kind == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert ("ENTRYPOINT", '["wsss"]') in instructions
