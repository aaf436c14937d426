"""The reference-data generator, with ASE's EMT standing in for CHGNet so the test is fast and offline."""

from __future__ import annotations

import json

import numpy as np
from ase.calculators.emt import EMT

from longmd.datagen import h2_pd6_graphene as gen
from longmd.io.read import read_trajectories


def test_substrate_is_the_papers_system() -> None:
    atoms = gen.build_substrate(gen.Protocol())
    symbols = atoms.get_chemical_symbols()
    assert (symbols.count("C"), symbols.count("Pd")) == (49, 6)
    assert list(atoms.pbc) == [True, True, False]
    assert atoms.cell[2, 2] - atoms.positions[:, 2].max() > 10  # vacuum above the cluster


def test_generate_resumes_and_writes_metadata(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(gen, "_calculator", EMT)
    monkeypatch.setattr(gen, "_reference_versions", lambda: {"model": "EMT (test stand-in)"})
    protocol = gen.Protocol(n_trajectories=2, n_frames=4, relax_steps=3, thermalise_steps=2, decorrelate_steps=2,
                            workers=1)
    path = gen.generate(tmp_path, protocol, progress=False)
    meta = json.loads((tmp_path / "h2_pd6_graphene.json").read_text())
    assert meta["n_frames"] == 8 and meta["n_atoms"] == 57 and len(meta["trajectories"]) == 2
    assert meta["protocol"]["seed"] == protocol.seed and "drift_meV_per_atom_ps" in meta["trajectories"][0]
    trajectories = read_trajectories(path)
    assert [len(t) for t in trajectories] == [4, 4]
    assert np.allclose(trajectories[1].velocities[0, -2:, 2], trajectories[1].velocities[0, -1, 2])  # H2 moves as one
    # An interrupted run resumes: finished trajectories are not recomputed.
    first = (tmp_path / "work" / "traj_000.extxyz").stat().st_mtime_ns
    (tmp_path / "work" / "traj_001.extxyz").unlink()
    gen.generate(tmp_path, protocol, progress=False)
    assert (tmp_path / "work" / "traj_000.extxyz").stat().st_mtime_ns == first
    assert (tmp_path / "work" / "traj_001.extxyz").exists()
