"""MACE's own trainer runs in longmd's environment and its model opens as ``mace:PATH`` (benchmarks train MACE so).

Guards the install: schnetpack 2.0.4 pins torchmetrics 1.0.1, on which mace_run_train >= 0.3.14 crashes in its
first validation (pyproject's dev extra keeps MACE below it)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch

pytest.importorskip("mace", reason="mace-torch is not installed")

from longmd.data.graph import Graph  # noqa: E402
from longmd.dynamics.state import MDState  # noqa: E402
from longmd.models.base import predict  # noqa: E402
from longmd.models.io import open_model  # noqa: E402
from longmd.neighbors import batched_neighbor_list  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from common import mace_run_train_exe, run_mace_train  # noqa: E402

SIZE = {"channels": 8, "max_l": 0, "r_max": 4.0, "seed": 0, "threads": 1}


def _frames(emt_data) -> list:
    frames = ase.io.read(emt_data, index="::10")
    for atoms in frames:
        atoms.info["REF_energy"] = atoms.get_potential_energy()
        atoms.arrays["REF_forces"] = atoms.get_forces()
        atoms.calc = None
    return frames


@pytest.fixture
def exe() -> str:
    found = mace_run_train_exe()
    if found is None:
        pytest.skip("mace_run_train is not on the PATH")
    return found


def test_mace_run_train_trains_and_longmd_runs_its_model(exe, emt_data, tmp_path) -> None:
    frames = _frames(emt_data)
    run = run_mace_train(tmp_path, frames[:12], frames[12:], max_epochs=1, extra=("--batch_size=4", "--ema"), **SIZE)
    assert run["epochs"] == 1 and run["frames"] == 12 and "--ema" in run["command"]
    model = open_model(f"mace:{tmp_path / 'mace.model'}")
    atoms = frames[0]
    state = MDState.from_atoms([atoms], dtype=torch.float32)
    edges, shifts = batched_neighbor_list(state.positions, state.cell, state.pbc, state.system, model.cutoff)
    out = predict(model.float(), Graph(state.positions, state.numbers, state.cell, state.system, edges, shifts))
    assert out.forces.shape == (len(atoms), 3) and np.isfinite(out.forces.detach().numpy()).all()


def test_a_budget_spent_before_any_checkpoint_is_a_clear_error(exe, emt_data, tmp_path) -> None:
    frames = _frames(emt_data)
    with pytest.raises(SystemExit, match="no checkpoint within the budget"):
        run_mace_train(tmp_path, frames[:12], 0.2, max_epochs=100, minutes=1 / 60, **SIZE)
    assert 1.0 <= json.loads((tmp_path / "spent_s.json").read_text())["s"] < 30.0  # the budget is kept for reruns


def test_a_run_stopped_by_its_budget_is_finished_from_its_latest_checkpoint(exe, emt_data, tmp_path) -> None:
    frames = _frames(emt_data)
    run_mace_train(tmp_path, frames[:12], frames[12:], max_epochs=2, **SIZE)  # leaves checkpoints
    (tmp_path / "mace.model").unlink()
    spent = json.loads((tmp_path / "spent_s.json").read_text())["s"]
    # resumed with the budget already spent: stopped after 1 s, then written from the latest checkpoint
    run = run_mace_train(tmp_path, frames[:12], frames[12:], max_epochs=100, minutes=spent / 60, resume=True, **SIZE)
    assert run["stopped_by_budget"] and run["best_epoch"] >= 0 and (tmp_path / "mace.model").exists()
    assert run["train_minutes"] > spent / 60
    open_model(f"mace:{tmp_path / 'mace.model'}")
    # without resume the folder starts afresh: no stale frames, checkpoints or budget
    run_mace_train(tmp_path, frames[:11], 0.2, max_epochs=1, extra=("--batch_size=4",), **SIZE)
    assert len(ase.io.read(tmp_path / "train.xyz", index=":")) == 11 and not (tmp_path / "valid.xyz").exists()
