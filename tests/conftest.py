"""Shared test fixtures: the golden vectors and the shared real data beside the repo."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(os.environ.get("WSSS_SHARED", Path(__file__).resolve().parents[2] / "shared"))
GOLDEN = SHARED / "golden"
COCO128 = SHARED / "data" / "coco128_voc"


def golden_cases(op: str) -> list[Path]:
    """The golden files of ``op``; fails (never skips) when the folder is missing."""
    if not GOLDEN.is_dir():
        raise FileNotFoundError(f"golden vectors not found at {GOLDEN} (set WSSS_SHARED)")
    cases = sorted(GOLDEN.glob(f"{op}_*.npz"))
    if not cases:
        raise FileNotFoundError(f"no golden vectors for {op} in {GOLDEN}")
    return cases


def load_golden(path: Path) -> tuple[str, dict, dict, dict[str, np.ndarray]]:
    """``(op, params, inputs, expected)`` of one golden file (expected includes extras)."""
    z = np.load(path)
    params = json.loads(str(z["params_json"]))
    input_names = json.loads(str(z["inputs_json"]))
    inputs = {k: z[k] for k in input_names}
    meta = {"op", "params_json", "inputs_json", "outputs_json", "note"}
    expected = {k: z[k] for k in z.files if k not in meta and k not in input_names}
    expected["__outputs__"] = json.loads(str(z["outputs_json"]))
    return str(z["op"]), params, inputs, expected


def assert_close(got: np.ndarray, want: np.ndarray) -> None:
    """The golden float tolerance: |got - want| <= 1e-5 + 1e-4 |want|, NaN where expected."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = np.isnan(want) | (np.abs(got - want) <= 1e-5 + 1e-4 * np.abs(want))
    assert ok.all(), f"max abs error {np.nanmax(np.abs(got - want)):.3g} at {np.argwhere(~ok)[:3]}"


# modules that train networks or run whole stages: `make test` runs them, `make test-fast`
# (the edit loop) leaves them out
INTEGRATION = {"test_pipeline", "test_shards", "test_crash", "test_ddp", "test_seg",
               "test_single_stage", "test_bad_input", "test_make_pseudo", "test_stages",
               "test_cam_methods", "test_report", "test_runtime", "test_training", "test_cli"}


def run_torch_golden(op: str, path: Path) -> None:
    """Call ``ops.<op>`` on a golden file's inputs as float32 tensors and check every
    output (a tensor or a tuple of them) is float32 and close to the recorded one."""
    import torch

    from wsss_cli import ops

    _, params, inputs, expected = load_golden(path)
    got = getattr(ops, op)(**{k: torch.from_numpy(v) for k, v in inputs.items()}, **params)
    names = expected["__outputs__"]
    got = got if isinstance(got, tuple) else (got,)
    assert len(got) == len(names)
    for name, value in zip(names, got, strict=True):
        assert value.dtype == torch.float32, name
        assert_close(value.detach().numpy(), expected[name])


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.module is not None and item.module.__name__.rsplit(".", 1)[-1] in INTEGRATION:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def coco128() -> Path:
    if not COCO128.is_dir():
        raise FileNotFoundError(f"shared data not found at {COCO128} (set WSSS_SHARED)")
    return COCO128
