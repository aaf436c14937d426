"""The stride-data recipe: a companion potential, thermalised starts, NVE with every step stored, resumable."""

from __future__ import annotations

import json

import numpy as np
import pytest

from longmd.datagen.stride_data import StrideDataProtocol, al110_slab, assemble, generate
from longmd.io.read import read_trajectories
from longmd.models.io import open_model

EMT = "ase:ase.calculators.emt:EMT"


def test_stride_data_is_nve_every_step_at_spread_temperatures_and_resumes(tmp_path):
    protocol = StrideDataProtocol(n_trajectories=2, steps=12, thermalise_fs=5.0, temperatures_K=(300.0, 900.0))
    atoms = al110_slab(size=(2, 2, 4))
    files = generate(open_model(EMT), atoms, protocol, tmp_path, progress=False)
    first = files[0].read_bytes()
    files[1].unlink()  # a run killed before the second trajectory was written
    generate(open_model(EMT), atoms, protocol, tmp_path, progress=False)
    assert files[0].read_bytes() == first and files[1].is_file()  # finished ones kept, the rest rerun
    data, meta_path = assemble(tmp_path, protocol, EMT, "al110")
    meta = json.loads(meta_path.read_text())
    assert meta["n_frames"] == 2 * 13 and meta["companion"] == EMT
    assert [t["temperature_K"] for t in meta["trajectories"]] == [300.0, 900.0]
    assert all(abs(t["drift_meV_per_atom_ps"]) < 5.0 for t in meta["trajectories"])  # NVE with EMT at 1 fs
    trajectories = read_trajectories([data])  # longmd's checks: one timestep, consecutive frames consistent
    assert len(trajectories) == 2 and all(tr.timestep_fs == 1.0 and len(tr) == 13 for tr in trajectories)
    tr = trajectories[1]
    e_tot = tr.energy + 0.5 * (tr.masses[:, None] * tr.velocities**2).sum((1, 2))
    assert np.ptp(e_tot) < 0.01 * tr.n_atoms  # conserved within 10 meV/atom over the run
    assert tr.pbc.tolist() == [True, True, False]
    kinetic_t = [(tr.masses[:, None] * tr.velocities**2).sum() / (3 * tr.n_atoms * 8.617333e-5) for tr in trajectories]
    assert kinetic_t[1] > kinetic_t[0]  # the hotter start is hotter


def test_an_unknown_structure_name_is_a_clear_error(tmp_path):
    from longmd.datagen.stride_data import open_structure

    with pytest.raises(ValueError, match=r"not a file and not one of the named structures \(al110\)"):
        open_structure(str(tmp_path / "missing.extxyz"))
    assert len(open_structure("al110")) == 72


def test_datagen_stride_data_from_the_command_line(tmp_path):
    import subprocess
    import sys

    args = [sys.executable, "-m", "longmd", "datagen", "stride-data", str(tmp_path / "al"), "--model", EMT,
            "--trajectories", "2", "--frames", "6", "--thermalise-fs", "2", "--timestep-fs", "2", "--no-progress"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    trajectories = read_trajectories([tmp_path / "al" / "stride_data.extxyz.xz"])
    assert [len(tr) for tr in trajectories] == [6, 6] and trajectories[0].timestep_fs == 2.0
    again = subprocess.run(args, capture_output=True, text=True, timeout=600)  # finished: nothing rerun
    assert again.returncode == 0 and "dataset:" in again.stdout
