"""What a new user trips over (issue 13): crashes, traps, run directories, threads, logs, clear errors."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from longmd.cli import main

SRC = str(Path(__file__).resolve().parents[1] / "src")
TINY = ["--set", "training.max_epochs=1", "--set", "training.windows_per_epoch=2", "--set", "training.batch_size=2",
        "--set", "training.val_windows=1", "--set", "training.val_length=3", "--set", "training.progress=false"]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m longmd ARGS`` in a fresh interpreter (nothing imported beforehand)."""
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "longmd", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=600)


@pytest.mark.skipif(importlib.util.find_spec("mace") is None, reason="needs mace-torch")
def test_mace_trains_from_a_fresh_interpreter(tmp_path) -> None:
    out = tmp_path / "run"
    done = run_cli("train", "demo", "--out", str(out), "--set", "model.name=mace",
                   "--set", "model.options={channels: 4, max_L: 0, correlation: 1}", *TINY)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Weights only load failed" not in done.stderr and (out / "best.pt").exists()


def test_atomic_writes_respect_the_umask(tmp_path) -> None:
    from longmd.atomic import atomic_write_text

    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "a.json", "{}")
        os.umask(0o077)
        private = atomic_write_text(tmp_path / "b.json", "{}")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    assert private.stat().st_mode & 0o777 == 0o600
