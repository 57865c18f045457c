"""The artifact store: every file a stage writes goes through here.

Rules (SPEC §4): files appear atomically (temporary name in the same folder, then
``os.replace``), ``state.json`` records per stage the hash of the settings that made
its outputs, and a per-image stage refuses to mix outputs made with other settings
unless asked to ``--overwrite``. Several shards of one stage may run at once against
one workdir; ``state.json`` and ``config.toml`` are updated under a file lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w

from wsss_cli.errors import WsssError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    The temporary name starts with ``.`` and ends with ``.tmp`` so that listings of
    finished outputs never see it. On error the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp(path)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _new_temp(path: Path) -> str:
    """Create an empty ``.<name>.<random>.tmp`` next to ``path``.

    Not ``tempfile.mkstemp``: its files are private (0600), and outputs in a workdir
    shared by a group on a cluster must get the usual umask-based mode.
    """
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return str(tmp)
        except FileExistsError:
            continue


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def link_file(source: Path, path: Path) -> None:
    """``path`` as a hard link to ``source`` (a copy where links are not allowed), atomically."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(_new_temp(Path(path)))
    tmp.unlink()
    try:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: Path, obj: Any) -> None:
    write_bytes(path, (json.dumps(obj, indent=2, default=str) + "\n").encode())


def settings_hash(settings: dict[str, Any]) -> str:
    """A short stable hash of JSON-able settings (key order does not matter)."""
    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes (short), used to tie outputs to the model that made them."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count``: this process handles every ``count``-th id."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str | None) -> Shard:
        """``"I/N"`` (0-based I), else the SLURM array variables, else the whole split."""
        if text:
            try:
                index, count = (int(p) for p in text.split("/"))
            except ValueError:
                raise WsssError(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from None
        elif "SLURM_ARRAY_TASK_ID" in os.environ and "SLURM_ARRAY_TASK_COUNT" in os.environ:
            first = int(os.environ.get("SLURM_ARRAY_TASK_MIN", "0"))
            index = int(os.environ["SLURM_ARRAY_TASK_ID"]) - first
            count = int(os.environ["SLURM_ARRAY_TASK_COUNT"])
        else:
            return cls()
        if not 0 <= index < count:
            raise WsssError(f"--shard {index}/{count}: need 0 <= I < N")
        return cls(index, count)

    def select(self, ids: Sequence[str]) -> list[str]:
        return list(ids[self.index :: self.count])

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True)
class ArtifactSet:
    """A folder of per-image outputs ``<id><suffix>`` made by one stage run."""

    name: str  # the folder under the workdir, e.g. "cams" or "pred/val"
    folder: Path
    suffix: str

    def path(self, image_id: str) -> Path:
        return self.folder / f"{image_id}{self.suffix}"

    def missing(self, ids: Sequence[str]) -> list[str]:
        return [i for i in ids if not self.path(i).exists()]


class Layout:
    """Where every artifact of a work folder lives (SPEC §4): stages never spell a path.

    Per-image outputs are named sets (folders): the defaults below, or any other name a
    user gives (``dump-cams --out cams_seam``), side by side in one workdir. Models live in
    a folder named after their kind (``cls``, ``aff``, ``seg``, ``single_stage``).
    """

    CAMS = "cams"
    AFF_LABELS = "aff_labels"
    PSEUDO = "pseudo"
    SEEDS = "seeds"
    PSEUDO_NO_CRF = "pseudo_nocrf"
    SUPERPIXELS = "ial/superpixels"

    def __init__(self, root: Path):
        self.root = Path(root)

    def superpixels(self) -> ArtifactSet:
        """SLIC superpixel ids ``<id>.png`` (uint16), IAL's regions."""
        return ArtifactSet(self.SUPERPIXELS, self.root / self.SUPERPIXELS, ".png")

    def arrays(self, name: str) -> ArtifactSet:
        """Per-image arrays ``<id>.npz`` other than CAMs (IAL's region candidates)."""
        return ArtifactSet(name, self.root / name, ".npz")

    def cams(self, name: str = CAMS) -> ArtifactSet:
        """CAM scores ``<id>.npz`` (:func:`write_cams`)."""
        return ArtifactSet(name, self.root / name, ".npz")

    def labels(self, name: str) -> ArtifactSet:
        """Label maps ``<id>.png``: affinity labels, pseudo-labels, predictions."""
        return ArtifactSet(name, self.root / name, ".png")

    def predictions(self, source: str) -> ArtifactSet:
        """Predictions of a split or image folder: ``pred/<source>``."""
        return self.labels(f"pred/{source}")

    def model_dir(self, kind: str) -> Path:
        """The folder of a model kind's ``model.pt``, ``last.pt``, ``metrics.jsonl``, log."""
        return self.root / kind.replace("-", "_")

    def model(self, kind: str) -> Path:
        return self.model_dir(kind) / "model.pt"

    def eval(self, name: str) -> Path:
        """An evaluation's numbers: ``eval/<name>.json``."""
        return self.root / "eval" / f"{name}.json"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def config(self) -> Path:
        return self.root / "config.toml"


def _round_part(part: str) -> property:
    return property(lambda self: f"ial/round{self.index}/{part}", doc=f"``ial/round<k>/{part}``")


@dataclass(frozen=True)
class IalRound:
    """The names of IAL round ``index``'s outputs, all under ``ial/round<index>/``: the
    pseudo-labels, the unary and pairwise model folders, the mined region candidates, the
    confident regions, and the next round's supervision (round 0: the CAM seeds)."""

    index: int
    labels = _round_part("labels")
    unary = _round_part("unary")
    candidates = _round_part("candidates")
    regions = _round_part("regions")
    pairwise = _round_part("pairwise")
    supervision = _round_part("supervision")

    @property
    def eval_name(self) -> str:
        """Its evaluation ``eval/ial_round<index>.json``."""
        return f"ial_round{self.index}"


@dataclass(frozen=True)
class ErasingStep:
    """The names of adversarial erasing step ``index`` (from 1) of the classifier in
    folder ``model``: the step's network folder ``<model>/step<k>`` and the regions erased
    from the next step's images, ``<model>/step<k>/erased`` (0/1 PNGs, the union of the
    steps so far)."""

    model: str
    index: int

    @property
    def network(self) -> str:
        return f"{self.model}/step{self.index}"

    @property
    def erased(self) -> str:
        return f"{self.network}/erased"


def entry_name(stage: str, output: str, default: str) -> str:
    """The ``state.json`` entry of a stage run: the stage's name for its default output
    set, ``stage:output`` for any other, so that each set keeps its own settings hash."""
    return stage if output == default else f"{stage}:{output}"


class Workdir:
    """One experiment's folder: stage outputs, ``state.json`` and ``config.toml``."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def state(self) -> dict[str, Any]:
        path = self.root / "state.json"
        if not path.exists():
            return {}
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise WsssError(f"{path}: not valid JSON ({e})") from None

    def stage_state(self, stage: str) -> dict[str, Any]:
        return self.state().get(stage, {})

    def producer_hashes(self, *entries: str) -> dict[str, str | None]:
        """Settings hashes of the stage runs whose outputs a stage reads: part of its
        settings, so that remaking an input invalidates what was made from the old one."""
        state = self.state()
        return {f"input:{e}": state.get(e, {}).get("settings_hash") for e in entries}

    def producer_of(self, output: str) -> str | None:
        """The ``state.json`` entry of the per-image stage run that wrote the set ``output``
        (its ``output``, or one of its ``also_writes``); None when no run recorded it, as in
        work folders made before runs recorded it."""
        return next((name for name, entry in self.state().items()
                     if isinstance(entry, dict) and output in (entry.get("output"),
                                                               *entry.get("also_writes", ()))), None)

    def update_stage(self, stage: str, compute: Callable[[], dict[str, Any]] | None = None,
                     **fields: Any) -> None:
        """Merge ``fields`` (and what ``compute()`` returns) into ``state.json[stage]``
        under the workdir lock.

        ``compute`` runs under the lock: shards finishing together must not write counts
        taken before the other one's last output appeared (the stale one would win).
        """
        with self._locked():
            state = self.state()
            entry = state.setdefault(stage, {})
            entry.update(fields)
            if compute is not None:
                entry.update(compute())
            entry["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
            write_json(self.root / "state.json", state)

    def record_config(self, stage: str, options: dict[str, Any]) -> None:
        """Store the resolved options of ``stage`` as a section of ``config.toml``."""
        with self._locked():
            path = self.root / "config.toml"
            config = tomllib.loads(path.read_text()) if path.exists() else {}
            config[stage] = {k: _toml_value(v) for k, v in options.items() if v is not None}
            write_bytes(path, tomli_w.dumps(config).encode())

    def claim(
        self,
        stage: str,
        settings: dict[str, Any],
        outputs: Sequence[Path],
        overwrite: bool,
        shared: bool = False,
    ) -> tuple[str, bool]:
        """Check ``settings`` against what made the stage's existing outputs, then mark the
        stage running with these settings, in one step.

        Outputs made with other settings raise unless ``overwrite``; with ``overwrite``
        they are removed.

        Returns ``(settings hash, finished)``; ``finished`` = the stage is done with
        exactly these settings (nothing is changed then). ``shared``: other shards of
        the same run may be writing outputs right now; ``overwrite`` then removes only
        outputs made with other settings, so that the shard that starts last does not
        delete what the first ones wrote (check and claim under one lock make the
        first shard's new settings visible to the next).
        """
        digest = settings_hash(settings)
        with self._locked():
            removed = self._check_outputs(stage, digest, outputs, overwrite, shared)
            state = self.state()
            entry = state.get(stage, {})
            finished = (not removed and entry.get("status") == "done"
                        and entry.get("settings_hash") == digest)
            if not finished:
                entry = state.setdefault(stage, {})
                entry.update(settings_hash=digest, settings=settings, status="running",
                             updated=time.strftime("%Y-%m-%dT%H:%M:%S"))
                write_json(self.root / "state.json", state)
        return digest, finished

    def _check_outputs(self, stage: str, digest: str, outputs: Sequence[Path], overwrite: bool,
                       shared: bool) -> bool:
        """Raise on outputs made with other settings, or remove them; True if any went."""
        previous = self.state().get(stage, {}).get("settings_hash")
        existing = [p for p in outputs if p.exists()]
        if existing and previous not in (None, digest):
            if not overwrite:
                raise WsssError(
                    f"{existing[0]}: made by '{stage}' with other settings; "
                    "pass --overwrite to replace it, or use another --workdir"
                )
            _remove(existing)
            return True
        if overwrite and existing and not (shared and previous == digest):
            _remove(existing)
            return True
        return False


def _remove(paths: Sequence[Path]) -> None:
    for p in paths:
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def _toml_value(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_toml_value(v) for v in value]
    return value


def write_cams(path: Path, classes: np.ndarray, cams: np.ndarray) -> None:
    """Store CAMs ``[n, H, W]`` (float16) of the foreground ``classes`` ``[n]`` (1-based)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, classes=classes.astype(np.int64), cams=cams.astype(np.float16))


def read_cams(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(classes [n] int64, cams [n, H, W] float32)`` as written by :func:`write_cams`."""
    try:
        # our own handle: np.load leaks its file when the zip directory is corrupt
        with open(path, "rb") as f, np.load(f) as z:
            return z["classes"], z["cams"].astype(np.float32)
    except FileNotFoundError:
        raise WsssError(f"{path}: CAM file not found (run dump-cams first)") from None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise WsssError(f"{path}: not a readable CAM file ({e})") from None
