"""C kernels of the ops, built on first use with the machine's C compiler.

Nothing needs a compiler: an op whose kernel cannot be built runs in torch instead. A
kernel is compiled once per source, compiler and CPU feature level into the user's cache
folder (``$XDG_CACHE_HOME/wsss/native``, else ``~/.cache/wsss/native``) and loaded with
ctypes; processes building it at the same time each write their own file and the last
one's rename wins, so a half-written library is never loaded.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shlex
import subprocess
import tempfile
from pathlib import Path

import torch

# per torch's CPU capability: the instruction set the kernels may use (the level is in the
# cache key: a library built for AVX2 must not be loaded on a machine without it). AVX-512
# machines get AVX2 code: built with AVX-512 the walk was slower (docs/results.md#random-walk).
ARCH_FLAGS = {"AVX512": ["-mavx2", "-mfma"], "AVX2": ["-mavx2", "-mfma"]}
FLAGS = ["-O3", "-std=gnu11", "-shared", "-fPIC", "-pthread"]
BUILD_SECONDS = 120


def cache_folder() -> Path:
    """Where the built kernels are kept."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "wsss" / "native"


@functools.cache
def library(name: str) -> ctypes.CDLL | None:
    """``ops/<name>.c`` built for this machine and loaded; None when it cannot be built
    (no C compiler, a failing one, no writable cache folder, or the source not installed)."""
    source = Path(__file__).with_name(f"{name}.c")
    compiler = shlex.split(os.environ.get("CC") or "cc")
    level = torch.backends.cpu.get_cpu_capability()
    command = [*compiler, *FLAGS, *ARCH_FLAGS.get(level, [])]
    try:
        key = hashlib.sha256(b"\0".join(
            [source.read_bytes(), " ".join(command).encode(), platform.machine().encode()]
        )).hexdigest()[:16]
        target = cache_folder() / f"{name}-{level.lower()}-{key}.so"
        if not target.exists():
            _build(command, source, target)
        return ctypes.CDLL(str(target))
    except (OSError, RuntimeError, subprocess.SubprocessError):  # RuntimeError: no home folder
        return None


def _build(command: list[str], source: Path, target: Path) -> None:
    """Compile ``source`` with ``command`` into ``target``, atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(handle)
    try:
        subprocess.run([*command, "-o", partial, str(source), "-lm"], check=True,
                       capture_output=True, timeout=BUILD_SECONDS)
        os.replace(partial, target)
    finally:
        Path(partial).unlink(missing_ok=True)
