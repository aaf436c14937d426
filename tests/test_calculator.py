"""ASE calculator: matches ``predict``, stress matches ASE's numerical stress, drives ASE's own MD."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import bulk, molecule
from ase.calculators.calculator import PropertyNotImplementedError
from ase.md.verlet import VelocityVerlet

from longmd import LongMDCalculator
from longmd.calculator import atoms_to_graph
from longmd.models.base import predict
from longmd.models.egnn import egnn_potential
from longmd.models.io import save_model
from longmd.models.potential import Potential


def _model() -> Potential:
    model = egnn_potential([1, 6, 8, 14], hidden=8, n_rff=6, n_layers=2, cutoff=3.0)
    model.set_reference_energies({1: -1.0, 6: -5.0, 8: -3.0, 14: -4.0})
    model.set_scale(0.5)
    return model


def _crystal() -> Atoms:
    atoms = bulk("SiC", "zincblende", a=4.3) * (2, 1, 1)
    atoms.set_cell(atoms.cell.array + np.array([[0.0, 0.2, 0.0], [0.1, 0.0, 0.0], [0.0, 0.0, 0.3]]))
    atoms.rattle(0.05, seed=1)
    return atoms


def test_energy_and_forces_match_predict() -> None:
    model = _model()
    atoms = _crystal()
    atoms.calc = LongMDCalculator(model, dtype="float64")
    graph, _ = atoms_to_graph(atoms, model.cutoff, torch.device("cpu"), torch.float64)
    ref = predict(model.double(), graph)
    assert atoms.get_potential_energy() == pytest.approx(ref.energy.item(), rel=1e-12)
    assert atoms.get_potential_energy(force_consistent=True) == pytest.approx(ref.energy.item(), rel=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), ref.forces.numpy(), atol=1e-12)


def test_caller_model_is_not_changed() -> None:
    model = _model()
    atoms = molecule("CH4")
    atoms.calc = LongMDCalculator(model, dtype="float64")
    atoms.get_forces()
    assert next(model.parameters()).dtype == torch.float32  # the calculator works on a float64 copy


def _numerical_stress(atoms: Atoms, d: float) -> np.ndarray:
    """(1/V) dE/dε by central differences of the energy under symmetric strain (Voigt order, as ASE)."""
    cell, volume = atoms.cell.array.copy(), atoms.get_volume()
    sigma = np.zeros((3, 3))
    for a in range(3):
        for b in range(a, 3):
            energies = []
            for sign in (1, -1):
                strain = np.eye(3)
                strain[a, b] += sign * d / (1 if a == b else 2)
                strain[b, a] = strain[a, b]
                strained = atoms.copy()
                strained.calc = atoms.calc
                strained.set_cell(cell @ strain, scale_atoms=True)
                energies.append(strained.get_potential_energy())
            sigma[a, b] = sigma[b, a] = (energies[0] - energies[1]) / (2 * d * volume)
    return sigma.flat[[0, 4, 8, 5, 2, 1]]


def test_stress_matches_numerical_stress() -> None:
    atoms = _crystal()
    atoms.calc = LongMDCalculator(_model())
    stress = atoms.get_stress()
    assert stress.shape == (6,)
    numerical = _numerical_stress(atoms, d=1e-5)
    np.testing.assert_allclose(stress, numerical, atol=1e-8)
    assert np.abs(stress).max() > 1e-4  # the check is not trivially satisfied


def test_stress_needs_a_periodic_cell() -> None:
    atoms = molecule("H2O")
    atoms.calc = LongMDCalculator(_model())
    assert np.isfinite(atoms.get_potential_energy())
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stress()


def test_calculator_from_saved_path_and_float32(tmp_path) -> None:
    model = _model()
    path = save_model(model, tmp_path / "model.pt")
    atoms = _crystal()
    atoms.calc = LongMDCalculator(str(path), device="cpu", dtype="float32")
    e32 = atoms.get_potential_energy()
    f32 = atoms.get_forces()
    atoms.calc = LongMDCalculator(path)
    assert e32 == pytest.approx(atoms.get_potential_energy(), abs=1e-4)
    np.testing.assert_allclose(f32, atoms.get_forces(), atol=1e-4)
    with pytest.raises(ValueError, match="dtype"):
        LongMDCalculator(model, dtype="float16")


def test_ase_velocity_verlet_runs_and_conserves_energy() -> None:
    atoms = _crystal()
    atoms.calc = LongMDCalculator(_model())
    masses = atoms.get_masses()[:, None]
    atoms.set_momenta(np.random.default_rng(0).normal(size=(len(atoms), 3)) * np.sqrt(masses * units.kB * 300))
    e0 = atoms.get_total_energy()
    dyn = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    dyn.run(10)
    assert dyn.nsteps == 10
    assert abs(atoms.get_total_energy() - e0) < 1e-3 * len(atoms)
