"""Running learned strides: the energy filter with a companion model, thermostats around the stride, the CLI."""

from __future__ import annotations

import subprocess
import sys

import ase.io
import numpy as np
import pytest
import torch

from conftest import thermalised
from longmd.dynamics.cores import ForceField, LearnedStride
from longmd.dynamics.filters import ALPHA
from longmd.dynamics.neighbor_policy import RebuildNeighbors
from longmd.dynamics.propagator import build_integrator
from longmd.dynamics.rollout import rollout
from longmd.dynamics.state import MDState
from longmd.models.io import save_model
from longmd.models.lj import LennardJones
from longmd.models.stride import HarmonicStride, StridePredictor
from test_propagators import single_atoms
from test_stride_predictor import alloy, predictor

LJ = {"epsilon": 0.05, "sigma": 2.3, "cutoff": 6.0, "r_switch": 5.0}


def test_energy_filter_restores_the_companion_total_energy_exactly():
    model = predictor(seed=4)
    state = thermalised([alloy(5), alloy(6)], 600.0)
    companion = ForceField(LennardJones(**LJ).double(), RebuildNeighbors(6.0), forces=False)
    raw = build_integrator(LearnedStride(model, RebuildNeighbors(model.cutoff)), 8.0)
    filtered = build_integrator(LearnedStride(model, RebuildNeighbors(model.cutoff)), 8.0, filters=["com", "energy"],
                                energy_model=companion)
    start = companion(state)
    e0 = start.energy + start.kinetic_energy()
    out = rollout(filtered, state, 5)
    for s in range(1, 6):
        e = out.energy[s] + MDState.kinetic_energy(out.state.replace(momenta=out.momenta[s]))
        torch.testing.assert_close(e, e0, rtol=0, atol=1e-10)
    alpha = out.state.per_system[ALPHA]
    assert alpha.shape == (2,) and torch.isfinite(alpha).all() and (alpha - 1).abs().max() > 1e-6
    unfiltered = rollout(raw, state, 5).state
    drift = (companion(unfiltered).energy + unfiltered.kinetic_energy() - e0).abs().max()
    assert drift > 1e-4  # without the filter the predictor does not conserve it


def test_the_energy_filter_of_a_learned_stride_needs_a_companion():
    model = predictor()
    with pytest.raises(ValueError, match="needs a companion energy model"):
        build_integrator(LearnedStride(model, RebuildNeighbors(model.cutoff)), 8.0, filters=["energy"])


def test_langevin_around_an_exact_stride_samples_the_target_temperature():
    """O(Δτ/2) exact-flow O(Δτ/2) preserves the canonical distribution at any stride: 256 independent 3D
    oscillators at a 12 fs stride average to the target temperature. (SVR is left out: it keeps each system's
    total momentum, and wells fixed in space exchange energy with it only slowly.)"""
    ensemble = "langevin"
    lone = single_atoms(seed=3, n=256)
    atoms = [sum(lone[8 * b + 1 : 8 * b + 8], lone[8 * b]) for b in range(32)]
    state = MDState.from_atoms(atoms)
    core = LearnedStride(HarmonicStride([1, 6], [0.5, 2.0], 12.0))
    propagator = build_integrator(core, 12.0, ensemble, temperature_K=400.0, friction_per_fs=0.02, tau_fs=50.0,
                                  seed=1)
    temps = []
    out = rollout(propagator, state, 600, store=False,
                  on_step=lambda k, s: temps.append(float(s.temperature(com_removed=False).mean())) if k >= 200
                  else None)
    assert out.steps_done == 600
    mean = np.mean(temps)
    # 768 dof: one sample's spread is 400 K x sqrt(2/768) = 20 K; 400 correlated samples average it down
    assert mean == pytest.approx(400.0, rel=0.03)


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "longmd", *args], capture_output=True, text=True, timeout=600)


def test_simulate_a_predictor_with_an_energy_model_from_the_command_line(tmp_path):
    model = predictor(seed=4)
    save_model(model, tmp_path / "stride.pt")
    save_model(LennardJones(**LJ).double(), tmp_path / "lj.pt")
    ase.io.write(tmp_path / "start.extxyz", thermalised([alloy(5)], 300.0).to_atoms()[0])
    done = _run("simulate", "--predictor", str(tmp_path / "stride.pt"), str(tmp_path / "start.extxyz"),
                "--energy-model", str(tmp_path / "lj.pt"), "--steps", "6", "--log-every", "1", "--traj-every", "6",
                "--no-progress",
                "--out", str(tmp_path / "sim"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "timestep 8 fs (the predictor's stride)" in done.stdout
    rows = np.genfromtxt(tmp_path / "sim" / "thermo.csv", delimiter=",", names=True)
    np.testing.assert_allclose(rows["E_tot_eV"], rows["E_tot_eV"][0], rtol=0, atol=1e-6)  # the filter holds it
    assert {"T_Al_K", "T_Cu_K", "energy_filter_alpha"} <= set(rows.dtype.names)
    assert np.isnan(rows["energy_filter_alpha"][0]) and np.isfinite(rows["energy_filter_alpha"][1:]).all()
    masses = {13: 26.98, 29: 63.55}
    atoms = ase.io.read(tmp_path / "sim" / "traj_000.extxyz", index=-1)
    for z, sym in ((13, "Al"), (29, "Cu")):  # the species temperature of the last frame, by hand
        mask = atoms.numbers == z
        kin = 0.5 * (atoms.get_momenta()[mask] ** 2).sum() / masses[z]
        assert rows[f"T_{sym}_K"][-1] == pytest.approx(2 * kin / (3 * mask.sum() * 8.617333262e-5), rel=1e-5)
    wrong = _run("simulate", "--predictor", str(tmp_path / "lj.pt"), str(tmp_path / "start.extxyz"), "--steps", "1",
                 "--out", str(tmp_path / "wrong"))
    assert wrong.returncode != 0 and "not a stride predictor" in wrong.stderr


def test_a_committee_steps_with_the_mean_and_stops_where_its_members_disagree(tmp_path):
    from longmd.dynamics.simulate import simulate
    from longmd.models.committee import SPREAD, Committee

    state = thermalised([alloy(5), alloy(6)], 600.0)
    same = Committee([predictor(seed=4), predictor(seed=4)])
    out = rollout(build_integrator(LearnedStride(same, RebuildNeighbors(same.cutoff)), 8.0), state, 2)
    alone = rollout(build_integrator(LearnedStride(predictor(seed=4), RebuildNeighbors(6.0)), 8.0), state, 2)
    torch.testing.assert_close(out.state.positions, alone.state.positions, rtol=0, atol=1e-12)
    assert float(out.state.per_system[SPREAD].max()) < 1e-12  # identical members agree
    mixed = Committee([predictor(seed=4), predictor(seed=5), predictor(seed=6)])
    spread = rollout(build_integrator(LearnedStride(mixed, RebuildNeighbors(mixed.cutoff)), 8.0), state,
                     1).state.per_system[SPREAD]
    assert spread.shape == (2,) and float(spread.min()) > 1e-4
    result = simulate(mixed, state, steps=3, timestep_fs=8.0, max_spread_A=float(spread.min()) / 2, progress=False)
    assert result.status == ["uncertainty", "uncertainty"] and "predictors disagree" in result.stopped[0].message
    with pytest.raises(ValueError, match="share one stride"):
        Committee([predictor(), HarmonicStride([13, 29], [1.0, 1.0], 4.0)])


def test_the_ase_style_dynamics_object_moves_the_atoms_like_the_propagator():
    from longmd.dynamics.ase_dynamics import LearnedDynamics

    atoms = thermalised([alloy(5)], 600.0).to_atoms()[0]
    model = predictor(seed=4)
    lj = LennardJones(**LJ).double()
    dyn = LearnedDynamics(atoms, model, energy_model=lj, ensemble="langevin", temperature_K=600.0, seed=3)
    seen = []
    dyn.attach(lambda: seen.append((dyn.nsteps, atoms.get_potential_energy() + atoms.get_kinetic_energy())), 2)
    dyn.run(4)
    assert [n for n, _ in seen] == [0, 2, 4] and dyn.get_time() == 32.0
    reference = build_integrator(LearnedStride(model, RebuildNeighbors(model.cutoff)), 8.0, "langevin", 600.0,
                                 filters=["com", "energy"], seed=3,
                                 energy_model=ForceField(lj, RebuildNeighbors(6.0), forces=False))
    out = rollout(reference, MDState.from_atoms(thermalised([alloy(5)], 600.0).to_atoms()[0]), 4).state
    np.testing.assert_allclose(atoms.get_positions(), out.positions.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(atoms.get_momenta(), out.momenta.numpy(), rtol=0, atol=1e-10)


def test_a_filtered_learned_stride_run_extends_bit_for_bit(tmp_path):
    from longmd.dynamics.simulate import simulate

    state = thermalised([alloy(5), alloy(6)], 600.0)
    kwargs = dict(timestep_fs=8.0, ensemble="langevin", temperature_K=600.0, filters=["com", "energy"],
                  energy_model=LennardJones(**LJ).double(), progress=False, log_every=1)
    reference = simulate(predictor(seed=4), state, steps=6, out_dir=tmp_path / "ref", **kwargs)
    simulate(predictor(seed=4), state, steps=3, out_dir=tmp_path / "run", **kwargs)
    resumed = simulate(predictor(seed=4), state, steps=6, out_dir=tmp_path / "run", resume=True, **kwargs)
    assert resumed.status == reference.status == ["ok", "ok"]
    assert torch.equal(resumed.state.positions, reference.state.positions)
    assert torch.equal(resumed.state.momenta, reference.state.momenta)
    assert torch.equal(resumed.state.per_system[ALPHA], reference.state.per_system[ALPHA])
    assert (tmp_path / "run" / "thermo.csv").read_text() == (tmp_path / "ref" / "thermo.csv").read_text()
    with pytest.raises(ValueError, match="energy_model"):  # another companion cannot continue the run
        simulate(predictor(seed=4), state, steps=8, out_dir=tmp_path / "run", resume=True,
                 **{**kwargs, "energy_model": LennardJones(**{**LJ, "epsilon": 0.06}).double()})


class Drifting(StridePredictor):
    """Not rotation-equivariant: every atom moves along +x by 0.01 Å per stride."""

    timestep_fs = 8.0

    def forward(self, state, edges=None):
        dq = torch.zeros_like(state.positions)
        dq[:, 0] = 0.01
        return dq, state.momenta


def test_the_random_rotation_filter_is_a_no_op_for_the_equivariant_predictor_only():
    state = thermalised([alloy(5)], 600.0)
    model = predictor(seed=4)
    plain = rollout(build_integrator(LearnedStride(model, RebuildNeighbors(model.cutoff)), 8.0), state, 3).state
    turned = rollout(build_integrator(LearnedStride(model, RebuildNeighbors(model.cutoff)), 8.0,
                                      filters=["rotation"], seed=2), state, 3).state
    torch.testing.assert_close(turned.positions, plain.positions, rtol=0, atol=1e-9)
    torch.testing.assert_close(turned.momenta, plain.momenta, rtol=0, atol=1e-9)
    torch.testing.assert_close(turned.cell, plain.cell, rtol=0, atol=1e-12)  # turned back

    moved = rollout(build_integrator(LearnedStride(Drifting()), 8.0, filters=["rotation"], seed=2), state, 3).state
    shift = (moved.positions - state.positions).mean(0)
    assert float(shift[0]) < 0.03 - 1e-3 and float(shift.norm()) > 1e-4  # the +x bias no longer adds up along x
    with pytest.raises(ValueError, match="rotation filter is for learned strides"):
        build_integrator(ForceField(LennardJones(**LJ).double(), RebuildNeighbors(6.0)), 1.0, filters=["rotation"])
