import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from noisecli.cli import app

ROOT = Path(__file__).resolve().parents[1]

# The tests read the CLI's output as a pipe prints it (display.py: COLUMNS if set, else wide).
# pytest-xdist's workers are started with COLUMNS=80 and LINES=24 in their environment, which
# would wrap those lines on some workers and not others; every test sees the same environment.
for _name in ("COLUMNS", "LINES"):
    os.environ.pop(_name, None)
if os.environ.get("PYTEST_XDIST_WORKER"):
    # two workers on two cores: torch's default of one intra-op thread per core in each would
    # oversubscribe the machine (a run's own --threads and the sweep's choice still apply). The
    # processes a test starts get one thread too, so that an in-process reference and a real
    # process sum in the same order (several tests compare them bit for bit).
    import torch

    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"

# A run small enough to train in well under a second: 120 digits, a narrow MLP.
TINY = {
    "data": {"kind": "digits", "train_size": 120},
    "model": {"kind": "mlp", "hidden": [32]},
    "noise": {"kind": "input", "factor": 0.3},
    "train": {"epochs": 3, "batch_size": 16, "lr": 3e-3},
}


def write_spec(folder: Path, spec: dict, name: str = "spec.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture
def three_threads():
    """torch at 3 threads for the test (restored after): a count no run here picks by itself, so a
    test that checks a run gives its threads back cannot pass by the worker's own 1 (xdist, above)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(3)
    yield 3
    torch.set_num_threads(before)


@pytest.fixture
def tiny_spec(tmp_path) -> Path:
    return write_spec(tmp_path, {"name": "tiny", **TINY})


@pytest.fixture
def cli(tmp_path):
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    runner = CliRunner()

    def run(*args: str):
        result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
        return result.exit_code, result.stdout, result.stderr

    return run


def run_process(*args: str, cwd: Path, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    """Run `python -m noisecli ...` as a real process (for signals and exit codes); `env` adds variables."""
    env = {**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "noisecli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, **kw)


def metrics_rows(run_dir: Path) -> list[dict]:
    """A run folder's metrics.jsonl, one dict per evaluation."""
    import json

    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_same_curves(a: list[dict], b: list[dict], rel: float) -> None:
    """Two runs' rows agree at every evaluation: losses, grad norm and every val metric within
    `rel` (calibration error, a sum of small differences, within `rel` absolute as well)."""
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):
        assert {k for k in ra if k.startswith("val_")} == {k for k in rb if k.startswith("val_")}
        for key in ("train_loss", "clean_train_loss", "grad_norm", *(k for k in ra if k.startswith("val_"))):
            assert rb[key] == pytest.approx(ra[key], rel=rel, abs=rel), (ra["step"], key)
