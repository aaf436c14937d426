"""MACE's own trainer runs in longmd's environment and its model opens as ``mace:PATH`` (benchmarks train MACE so).

Guards the install: schnetpack 2.0.4 pins torchmetrics 1.0.1, on which mace_run_train >= 0.3.14 crashes in its
first validation (pyproject's dev extra keeps MACE below it)."""

from __future__ import annotations

import shutil
import subprocess
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


def test_mace_run_train_trains_and_longmd_runs_its_model(emt_data, tmp_path) -> None:
    exe = shutil.which("mace_run_train", path=str(Path(sys.executable).parent)) or shutil.which("mace_run_train")
    if exe is None:
        pytest.skip("mace_run_train is not on the PATH")
    frames = ase.io.read(emt_data, index="::10")
    for atoms in frames:
        atoms.info["REF_energy"] = atoms.get_potential_energy()
        atoms.arrays["REF_forces"] = atoms.get_forces()
        atoms.calc = None
    ase.io.write(tmp_path / "train.xyz", frames[:12])
    ase.io.write(tmp_path / "valid.xyz", frames[12:])
    cmd = [exe, "--name=tiny", "--train_file=train.xyz", "--valid_file=valid.xyz", "--E0s=average",
           "--model=MACE", "--num_channels=8", "--max_L=0", "--r_max=4.0", "--max_num_epochs=1", "--batch_size=4",
           "--device=cpu", "--energy_key=REF_energy", "--forces_key=REF_forces", "--default_dtype=float32",
           "--ema", "--ema_decay=0.99", "--seed=0"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    model = open_model(f"mace:{tmp_path / 'tiny.model'}")
    atoms = frames[0]
    state = MDState.from_atoms([atoms], dtype=torch.float32)
    edges, shifts = batched_neighbor_list(state.positions, state.cell, state.pbc, state.system, model.cutoff)
    out = predict(model.float(), Graph(state.positions, state.numbers, state.cell, state.system, edges, shifts))
    assert out.forces.shape == (len(atoms), 3) and np.isfinite(out.forces.detach().numpy()).all()
