"""ASE constraints in longmd's MD: FixAtoms and FixCom in every integrator and core, their degrees of freedom,
and the constraints in the written frames."""

from __future__ import annotations

import csv

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import fcc111
from ase.constraints import FixAtoms, FixBondLength, FixCom

from longmd.dynamics.cores import LearnedStride
from longmd.dynamics.propagator import build_integrator
from longmd.dynamics.rollout import rollout
from longmd.dynamics.simulate import simulate
from longmd.dynamics.state import MDState
from longmd.models.lj import LennardJones
from longmd.models.stride import HarmonicStride

ENSEMBLES = ("nve", "langevin", "svr")


def lj() -> LennardJones:
    return LennardJones(epsilon=0.0104, sigma=3.4, cutoff=8.5, r_switch=7.0)


def slab(seed: int = 0) -> Atoms:
    """A 3-layer Ar(111) slab at ~60 K with its bottom layer (tag 3) held by FixAtoms."""
    atoms = fcc111("Ar", size=(2, 2, 3), a=5.26, vacuum=6.0)
    rng = np.random.default_rng(seed)
    atoms.set_momenta(rng.normal(size=(len(atoms), 3)) * np.sqrt(atoms.get_masses()[:, None] * 8.617e-5 * 60.0))
    atoms.set_constraint(FixAtoms(mask=atoms.get_tags() == 3))
    return atoms


def moving_cluster(seed: int = 1) -> Atoms:
    """Eight Ar atoms (a cube of side ~3.8 Å) with random momenta (a moving centre of mass) and FixCom."""
    rng = np.random.default_rng(seed)
    grid = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=float) * 3.8
    atoms = Atoms("Ar8", positions=grid + rng.normal(scale=0.1, size=(8, 3)), cell=[30.0] * 3, pbc=False)
    atoms.set_momenta(rng.normal(size=(8, 3)) * np.sqrt(atoms.get_masses()[:, None] * 8.617e-5 * 60.0))
    atoms.set_constraint(FixCom())
    return atoms


def thermo_rows(path) -> dict[tuple[int, int], float]:
    with open(path) as f:
        return {(int(r["step"]), int(r["replica"])): float(r["T_K"]) for r in csv.DictReader(f)}


@pytest.mark.parametrize("ensemble", ENSEMBLES)
def test_fixed_bottom_layer_does_not_move_and_frames_keep_the_constraint(tmp_path, ensemble) -> None:
    atoms = slab()
    fixed = atoms.constraints[0].get_indices()
    result = simulate(lj(), atoms, steps=100, timestep_fs=5.0, ensemble=ensemble, temperature_K=60.0,
                      out_dir=tmp_path, log_every=20, traj_every=20, replicas=2, progress=False,
                      dtype=torch.float64)
    assert result.status == ["ok", "ok"]
    x = result.state.positions.reshape(2, len(atoms), 3).numpy()
    for r in range(2):
        assert np.abs(x[r, fixed] - atoms.positions[fixed]).max() < 1e-12
        assert np.abs(x[r] - atoms.positions).max() > 0.05  # the free atoms did move
        assert np.all(result.state.momenta.reshape(2, len(atoms), 3)[r, fixed].numpy() == 0.0)
    rows = thermo_rows(tmp_path / "thermo.csv")
    for fmt, digits in (("traj", 1e-12), ("extxyz", 1e-7)):  # extxyz writes 8 decimals
        frames = ase.io.read(tmp_path / f"traj_001.{fmt}", ":")
        assert len(frames) == 6
        for frame in frames:
            assert [type(c).__name__ for c in frame.constraints] == ["FixAtoms"]
            np.testing.assert_array_equal(frame.constraints[0].get_indices(), fixed)
            assert np.abs(frame.positions[fixed] - atoms.positions[fixed]).max() < digits
    for frame in ase.io.read(tmp_path / "traj_001.traj", ":"):  # T counts 3N - 3 N_fixed dof, as ASE does
        assert rows[(frame.info["step"], 1)] == pytest.approx(frame.get_temperature(), rel=1e-9)


@pytest.mark.parametrize("ensemble", ENSEMBLES)
def test_fix_com_holds_the_centre_of_mass(tmp_path, ensemble) -> None:
    atoms = moving_cluster()
    com = atoms.get_center_of_mass()
    result = simulate(lj(), atoms, steps=100, timestep_fs=5.0, ensemble=ensemble, temperature_K=60.0,
                      out_dir=tmp_path, log_every=25, traj_every=25, progress=False, dtype=torch.float64)
    assert result.status == ["ok"]
    final = result.final_atoms[0]
    assert np.abs(final.get_center_of_mass() - com).max() < 1e-10
    assert np.abs(final.get_momenta().sum(0)).max() < 1e-12
    assert np.abs(final.positions - atoms.positions).max() > 0.05
    rows = thermo_rows(tmp_path / "thermo.csv")
    for frame in ase.io.read(tmp_path / "traj_000.traj", ":"):
        assert [type(c).__name__ for c in frame.constraints] == ["FixCom"]
        assert rows[(frame.info["step"], 0)] == pytest.approx(frame.get_temperature(), rel=1e-9)


def test_constrained_and_free_structures_in_one_batch() -> None:
    """Replicas of a constrained slab and of the same slab without constraints: each follows its own rules."""
    free = slab()
    free.set_constraint()
    result = simulate(lj(), [slab(), free], steps=60, timestep_fs=5.0, ensemble="langevin", temperature_K=60.0,
                      replicas=2, progress=False, dtype=torch.float64)
    fixed = slab().constraints[0].get_indices()
    x = result.state.positions.reshape(4, len(free), 3).numpy()
    for r in (0, 1):
        assert np.abs(x[r, fixed] - free.positions[fixed]).max() < 1e-12
    for r in (2, 3):
        assert np.abs(x[r, fixed] - free.positions[fixed]).max() > 1e-3
    assert [len(a.constraints) for a in result.final_atoms] == [1, 1, 0, 0]


def test_degrees_of_freedom_count_the_constraints_as_ase() -> None:
    atoms, cluster = slab(), moving_cluster()
    both = moving_cluster()
    both.set_constraint([FixAtoms(indices=[0, 1]), FixCom()])
    state = MDState.from_atoms([atoms, cluster, both]).constrained()
    expected = [a.get_number_of_degrees_of_freedom() for a in (atoms, cluster, both)]
    assert state.degrees_of_freedom(com_removed=True).tolist() == expected
    assert state.degrees_of_freedom(com_removed=False).tolist() == expected
    for frame, t in zip(state.to_atoms(), state.temperature().tolist(), strict=True):
        assert t == pytest.approx(frame.get_temperature(), rel=1e-12)


def test_learned_stride_core_keeps_fixed_atoms_and_the_centre_of_mass() -> None:
    """A stride predictor moves every atom; the constrained core undoes that for fixed atoms and the COM."""
    atoms = moving_cluster()
    atoms.set_constraint([FixAtoms(indices=[0]), FixCom()])
    state = MDState.from_atoms(atoms)
    com = atoms.get_center_of_mass()
    core = LearnedStride(HarmonicStride([18], [0.5], 8.0))
    propagator = build_integrator(core, 8.0, "langevin", temperature_K=60.0, seed=0, filters=("com",))
    final = rollout(propagator, state, 20, store=False).state.to_atoms()[0]
    assert np.abs(final.positions[0] - atoms.positions[0]).max() == 0.0
    assert np.abs(final.get_center_of_mass() - com).max() < 1e-10
    assert np.abs(final.positions[1:] - atoms.positions[1:]).max() > 0.05


def test_unsupported_constraint_is_refused_by_name() -> None:
    atoms = moving_cluster()
    atoms.set_constraint(FixBondLength(0, 1))
    with pytest.raises(ValueError, match=r"structure 0 carries the ASE constraint FixBondLength.*FixAtoms and FixCom"):
        simulate(lj(), atoms, steps=2, timestep_fs=5.0, progress=False)


def test_learned_dynamics_on_atoms_keeps_fixed_atoms_and_counts_free_species() -> None:
    from longmd.dynamics.ase_dynamics import LearnedDynamics
    from longmd.dynamics.equipartition import species_temperatures

    atoms = moving_cluster()
    atoms.set_constraint(FixAtoms(indices=[0, 1]))
    start = atoms.positions.copy()
    dyn = LearnedDynamics(atoms, HarmonicStride([18], [0.5], 8.0), ensemble="langevin", temperature_K=60.0)
    dyn.run(10)
    assert np.abs(atoms.positions[:2] - start[:2]).max() == 0.0
    assert np.abs(atoms.positions[2:] - start[2:]).max() > 0.05
    t_ar = float(species_temperatures(dyn.state, [18])[0, 0])  # the 6 free atoms' temperature
    assert t_ar == pytest.approx(atoms.get_temperature(), rel=1e-9)  # ASE: 3 N - 6 dof, fixed atoms at rest
