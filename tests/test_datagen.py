"""The reference-data generator, with ASE's EMT standing in for CHGNet so the test is fast and offline."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.calculators.emt import EMT

from longmd.datagen import bulk, common
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


def _lennard_jones():
    from ase.calculators.lj import LennardJones

    return LennardJones(sigma=2.0, epsilon=0.01, rc=4.0, smooth=True)


@pytest.mark.parametrize("system", ["sic", "gese2"])
def test_bulk_recipes_resume_and_write_metadata(system, tmp_path, monkeypatch) -> None:
    """SiC and GeSe2 with Lennard-Jones standing in for CHGNet: periodic cells of the recipe's size, every NVE
    step stored, metadata with generation time and drift, resume without recomputing, a changed protocol refused."""
    monkeypatch.setattr(common, "chgnet_calculator", _lennard_jones)
    monkeypatch.setattr(common, "reference_versions", lambda: {"model": "Lennard-Jones (test stand-in)"})
    protocol = bulk.protocol_for(system, n_trajectories=2, n_frames=4, equilibrate_steps=2, melt_steps=3,
                                 decorrelate_steps=1, quench_steps=2, relax_steps=2)
    path = bulk.generate(tmp_path, protocol, progress=False)
    meta = json.loads((tmp_path / f"{system}.json").read_text())
    assert meta["n_frames"] == 8 and meta["n_atoms"] == {"sic": 64, "gese2": 72}[system]
    assert meta["generation_time_s"] > 0 and np.isfinite(meta["max_abs_drift_meV_per_atom_ps"])
    assert [t["target_K"] for t in meta["trajectories"]] == list(protocol.temperatures_K)
    trajectories = read_trajectories(path)
    assert [len(t) for t in trajectories] == [4, 4]
    assert trajectories[0].timestep_fs == protocol.timestep_fs and all(trajectories[0].pbc)
    if system == "gese2":
        symbols = sorted(trajectories[0].numbers.tolist())
        assert symbols.count(32) == 24 and symbols.count(34) == 48
    first = (tmp_path / "work" / "traj_000.extxyz").stat().st_mtime_ns
    (tmp_path / "work" / "traj_001.extxyz").unlink()
    bulk.generate(tmp_path, protocol, progress=False)
    assert (tmp_path / "work" / "traj_000.extxyz").stat().st_mtime_ns == first
    assert (tmp_path / "work" / "traj_001.extxyz").exists()
    with pytest.raises(ValueError, match="another protocol"):
        bulk.generate(tmp_path, bulk.protocol_for(system, n_trajectories=3), progress=False)


def test_random_gese2_keeps_its_minimum_distance() -> None:
    atoms = bulk.random_gese2(bulk.protocol_for("gese2"), np.random.default_rng(0))
    assert len(atoms) == 72 and atoms.get_all_distances(mic=True)[np.triu_indices(72, 1)].min() >= 2.0
    density = atoms.get_masses().sum() * 1.66053907e-24 / (atoms.get_volume() * 1e-24)
    assert density == pytest.approx(4.2, rel=1e-6)
