"""A propagator that is not a force field: the exact propagator of harmonic wells, as a learned-stride core.

Known answer at any stride: x(t) = x cos ωt + p/(mω) sin ωt, p(t) = p cos ωt - mωx sin ωt, ω = sqrt(k/m).
It runs through ``rollout``, ``simulate``, the rollout test and a training stage (which must recover k).
"""

from __future__ import annotations

import math

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from conftest import integrator, md, tiny_training_config
from longmd.analysis.rollout_test import rollout_errors
from longmd.data.windows import Window
from longmd.dynamics.cores import LearnedStride
from longmd.dynamics.neighbor_policy import RebuildNeighbors
from longmd.dynamics.propagator import build_integrator
from longmd.dynamics.rollout import rollout
from longmd.dynamics.simulate import simulate
from longmd.dynamics.state import MDState
from longmd.io.read import read_trajectories
from longmd.models.io import load_model
from longmd.models.stride import HarmonicStride, HarmonicWell
from longmd.training.trainer import Trainer
from longmd.units import fs_to_ase_time

K = {1: 0.5, 6: 2.0}  # eV/Å^2 per species: periods of ~9 fs (H) and ~16 fs (C)


def exact(x: np.ndarray, p: np.ndarray, m: np.ndarray, k: np.ndarray, t_fs: float) -> tuple[np.ndarray, np.ndarray]:
    omega = np.sqrt(k / m)[:, None]
    wt = omega * fs_to_ase_time(t_fs)
    m = m[:, None]
    return x * np.cos(wt) + p / (m * omega) * np.sin(wt), p * np.cos(wt) - m * omega * x * np.sin(wt)


def single_atoms(seed: int = 0, n: int = 6) -> list[Atoms]:
    """One atom per system (H or C), displaced from the origin and moving: independent 3D oscillators."""
    rng = np.random.default_rng(seed)
    out = []
    for b in range(n):
        atoms = Atoms("H" if b % 2 else "C", positions=rng.normal(scale=0.3, size=(1, 3)), cell=[20.0] * 3)
        atoms.set_momenta(rng.normal(scale=0.05, size=(1, 3)))
        out.append(atoms)
    return out


def stride(timestep_fs: float, k: dict[int, float] = K) -> HarmonicStride:
    return HarmonicStride(sorted(k), [k[z] for z in sorted(k)], timestep_fs)


def test_learned_stride_core_is_exact_at_any_stride() -> None:
    state = MDState.from_atoms(single_atoms())
    k = np.array([K[int(z)] for z in state.numbers])
    x0, p0, m = (t.numpy() for t in (state.positions, state.momenta, state.masses))
    for dt_fs in (0.5, 7.0, 23.0):
        out = rollout(build_integrator(LearnedStride(stride(dt_fs)), dt_fs), state, 10)
        assert not out.forces and not out.energy  # a predictor gives neither: nothing is recorded
        for s in (1, 10):
            x, p = exact(x0, p0, m, k, s * dt_fs)
            np.testing.assert_allclose(out.positions[s].numpy(), x, rtol=0, atol=1e-12)
            np.testing.assert_allclose(out.momenta[s].numpy(), p, rtol=0, atol=1e-12)


def test_velocity_verlet_on_the_well_converges_to_the_stride_predictor() -> None:
    """The same physics both ways: 0.05 fs velocity Verlet on V = k x^2 / 2 vs one exact 10 fs stride."""
    state = MDState.from_atoms(single_atoms(n=1))  # carbon
    vv = md(HarmonicWell([6], K[6]), state, 200, integrator("nve", 0.05), RebuildNeighbors(1.0))
    jump = rollout(build_integrator(LearnedStride(stride(10.0)), 10.0), state, 1)
    torch.testing.assert_close(vv.state.positions, jump.state.positions, rtol=0, atol=1e-5)
    torch.testing.assert_close(vv.state.momenta, jump.state.momenta, rtol=0, atol=1e-5)


def test_stride_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="trained for 10.0 fs steps, not 5.0 fs"):
        build_integrator(LearnedStride(stride(10.0)), 5.0)
    with pytest.raises(ValueError, match="trained for 10.0 fs"):
        simulate(stride(10.0), single_atoms(), steps=2, timestep_fs=5.0, progress=False)


def test_simulate_runs_a_stride_predictor_with_thermostat_and_filters(tmp_path) -> None:
    atoms = single_atoms()
    result = simulate(stride(8.0), atoms, steps=25, timestep_fs=8.0, out_dir=tmp_path / "nve", progress=False)
    state = MDState.from_atoms(atoms)
    k = np.array([K[int(z)] for z in state.numbers])
    x, p = exact(state.positions.numpy(), state.momenta.numpy(), state.masses.numpy(), k, 25 * 8.0)
    np.testing.assert_allclose(result.state.positions.numpy(), x, rtol=0, atol=1e-10)
    assert result.status == ["ok"] * len(atoms) and (tmp_path / "nve" / "thermo.csv").exists()
    thermostatted = simulate(stride(8.0), atoms, steps=25, timestep_fs=8.0, ensemble="langevin", temperature_K=300.0,
                             filters=["com"], progress=False)
    assert thermostatted.status == ["ok"] * len(atoms)
    assert float((thermostatted.state.positions - result.state.positions).abs().max()) > 1e-3  # the noise acts


def write_oscillator_data(path, n_traj: int = 8, n_frames: int = 30, timestep_fs: float = 4.0) -> None:
    """Trajectories of single-atom oscillators (exact), with energies and forces, as an extxyz file."""
    frames = []
    for t, atoms in enumerate(single_atoms(seed=1, n=n_traj)):
        z = int(atoms.numbers[0])
        x, p, m, k = atoms.positions, atoms.get_momenta(), atoms.get_masses(), np.array([K[z]])
        for step in range(n_frames):
            xs, ps = exact(x, p, m, k, step * timestep_fs)
            frame = Atoms(atoms.symbols, positions=xs, cell=atoms.cell, pbc=False)
            frame.set_momenta(ps)
            energy = float(0.5 * K[z] * (xs**2).sum())
            frame.calc = SinglePointCalculator(frame, energy=energy, forces=-K[z] * xs)
            frame.info.update(traj_id=t, step=step, timestep_fs=timestep_fs)
            frames.append(frame)
    ase.io.write(path, frames, format="extxyz")


def test_rollout_test_scores_a_stride_predictor_by_positions(tmp_path) -> None:
    write_oscillator_data(tmp_path / "osc.extxyz")
    trajectories = read_trajectories([tmp_path / "osc.extxyz"])
    windows = [Window(t, 0, 20) for t in range(len(trajectories))]
    right = rollout_errors(stride(4.0), trajectories, windows, dtype=torch.float64)
    wrong = rollout_errors(stride(4.0, {1: 0.6, 6: 2.4}), trajectories, windows, dtype=torch.float64)
    assert right.failed == 0 and right.mean_deviation < 1e-8
    assert wrong.mean_deviation > 0.01
    assert math.isnan(right.mean_mepa)  # no forces to score: NaN, never a fake 0


def test_a_training_stage_recovers_the_stiffness(tmp_path) -> None:
    """Dynamic Training of the predictor (loss on positions and momenta along 1..3-stride rollouts) finds k."""
    write_oscillator_data(tmp_path / "osc.extxyz")
    cfg = tiny_training_config(tmp_path / "osc.extxyz", tmp_path / "run", "data.split=trajectory",
                               "training.position_weight=1", "training.momentum_weight=1", "training.s_max=3",
                               "training.lr=0.05", "training.lr_reset=0.02", "training.max_epochs_per_s=15",
                               "training.patience=3", "training.batch_size=4", "training.val_windows=2",
                               "training.windows_per_epoch=16")
    start = stride(4.0, {1: 0.3, 6: 3.0})
    trainer = Trainer(cfg, log=lambda *_: None, model=start)
    result = trainer.run()
    assert {r["S"] for r in result.records} == {2, 3} or {r["S"] for r in result.records} == {1, 2, 3}
    learned = load_model(tmp_path / "run" / "best.pt")
    assert isinstance(learned, HarmonicStride)
    for z, k in learned.stiffness().items():
        assert k == pytest.approx(K[z], rel=0.02), learned.stiffness()


def test_simulate_with_a_stride_core_keeps_fixed_atoms_in_place() -> None:
    from ase.constraints import FixAtoms

    atoms = single_atoms(n=1)[0] + Atoms("H", positions=[[3.0, 0, 0]], momenta=[[0.05, 0.0, 0.0]])
    atoms.set_constraint(FixAtoms(indices=[1]))
    result = simulate(stride(8.0), atoms, steps=5, timestep_fs=8.0, progress=False)
    final = result.final_atoms[0]
    assert final.positions[1].tolist() == [3.0, 0.0, 0.0]
    assert np.abs(final.positions[0] - atoms.positions[0]).max() > 0.01
    assert [type(c).__name__ for c in final.constraints] == ["FixAtoms"]
