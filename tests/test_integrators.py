"""Integrators (B/A/O/R splitting steps) and Maxwell-Boltzmann momenta on an analytic Lennard-Jones system."""

from __future__ import annotations

import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.cluster import Icosahedron

from conftest import thermalised
from longmd.dynamics.integrators import Integrator, VelocityVerlet, make_integrator
from longmd.dynamics.neighbor_policy import RebuildNeighbors, VerletNeighbors
from longmd.dynamics.rollout import rollout
from longmd.dynamics.state import MDState, maxwell_boltzmann_momenta
from longmd.models.lj import LennardJones
from longmd.units import KB_EV_PER_K


def argon_crystal(repeat: int = 1) -> Atoms:
    return bulk("Ar", "fcc", a=5.26, cubic=True).repeat(repeat)


def argon_cluster() -> Atoms:
    atoms = Icosahedron("Ar", 2)
    atoms.center(vacuum=5.0)
    return atoms


def smooth_lj() -> LennardJones:
    return LennardJones(epsilon=0.0104, sigma=3.4, cutoff=8.5, r_switch=7.0)


def test_maxwell_boltzmann_zero_momentum_and_temperature() -> None:
    state = MDState.from_atoms([argon_crystal(), argon_cluster(), Atoms("Ar", positions=[[0, 0, 0]])] * 50)
    gen = torch.Generator().manual_seed(1)
    for exact in (True, False):
        p = maxwell_boltzmann_momenta(state.masses, state.system, 300.0, gen, exact=exact, n_systems=state.n_systems)
        s = state.replace(momenta=p)
        total = torch.zeros(s.n_systems, 3, dtype=p.dtype).index_add(0, s.system, p)
        assert total.abs().max() < 1e-12
        t = s.temperature()[s.atoms_per_system() > 1]
        if exact:
            torch.testing.assert_close(t, torch.full_like(t, 300.0))
        else:  # 100 systems with 9 or 36 dof: the mean is within a few per cent of the target
            assert abs(float(t.mean()) - 300.0) < 20.0 and float(t.std()) > 10.0
        assert float(s.temperature()[2]) == 0.0  # a single atom cannot move once its momentum is removed


def test_make_integrator_sequences() -> None:
    assert make_integrator("nve", 1.0).thermostat is None
    assert make_integrator("langevin", 1.0, 300.0).name == "langevin"
    assert not make_integrator("langevin", 1.0, 300.0).com_removed and make_integrator("svr", 1.0, 300.0).com_removed
    with pytest.raises(ValueError, match="ensemble"):
        make_integrator("nose-hoover", 1.0, 300.0)
    with pytest.raises(ValueError, match="temperature"):
        make_integrator("svr", 1.0)


def energy_error(timestep_fs: float, total_fs: float = 1000.0) -> float:
    """Largest |E_tot(t) - E_tot(0)| per atom over ``total_fs`` of NVE."""
    state = thermalised([argon_crystal(2)], 60.0)
    result = rollout(smooth_lj(), state, round(total_fs / timestep_fs), make_integrator("nve", timestep_fs),
                     VerletNeighbors(8.5, 1.0))
    e_pot = torch.stack(result.energy)[:, 0]
    masses = state.masses
    e_kin = torch.stack([(0.5 * p.pow(2).sum(-1) / masses).sum() for p in result.momenta])
    e_tot = e_pot + e_kin
    return float((e_tot - e_tot[0]).abs().max()) / state.n_atoms


def test_velocity_verlet_energy_error_shrinks_as_dt_squared() -> None:
    coarse, fine = energy_error(20.0), energy_error(10.0)
    assert coarse < 2e-4  # eV/atom, against kinetic energies of ~8 meV/atom
    assert 3.2 < coarse / fine < 4.8, (coarse, fine)


def test_velocity_verlet_is_time_reversible() -> None:
    state = thermalised([argon_cluster()], 40.0)
    model, integrator = smooth_lj(), make_integrator("nve", 10.0)
    forward = rollout(model, state, 60, integrator, RebuildNeighbors(8.5))
    end = forward.state
    back = rollout(model, end.replace(momenta=-end.momenta), 60, integrator, RebuildNeighbors(8.5))
    assert float((back.state.positions - state.positions).abs().max()) < 1e-10
    assert float((back.state.momenta + state.momenta).abs().max()) < 1e-10
    assert float((end.positions - state.positions).abs().max()) > 0.1  # it did move


def test_core_is_swappable() -> None:
    calls = []

    class CountingCore(VelocityVerlet):
        def __call__(self, state, force_fn, dt):
            calls.append(dt)
            return super().__call__(state, force_fn, dt)

    state = thermalised([argon_cluster()], 40.0)
    ref = rollout(smooth_lj(), state, 5, make_integrator("nve", 5.0), RebuildNeighbors(8.5))
    out = rollout(smooth_lj(), state, 5, Integrator(5.0, core=CountingCore()), RebuildNeighbors(8.5))
    assert len(calls) == 5
    torch.testing.assert_close(out.state.positions, ref.state.positions, rtol=0, atol=0)


@pytest.mark.parametrize("ensemble", ["langevin", "svr"])
def test_thermostats_sample_the_canonical_kinetic_energy(ensemble: str) -> None:
    """64 four-atom Ar crystals from 10 K to 40 K: E_kin ~ Gamma(dof/2, kT) (mean and variance)."""
    target = 40.0
    state = thermalised([argon_crystal()] * 64, 10.0)
    integrator = make_integrator(ensemble, 10.0, target, friction_per_fs=0.02, tau_fs=50.0, seed=3)
    samples = []

    def collect(step: int, s: MDState) -> None:
        if step >= 200 and step % 4 == 0:
            samples.append(s.kinetic_energy())

    rollout(smooth_lj(), state, 1000, integrator, VerletNeighbors(8.5, 1.0), store=False, on_step=collect)
    kin = torch.stack(samples)  # (times, systems)
    dof = float(state.degrees_of_freedom(com_removed=integrator.com_removed)[0])  # 12 (Langevin) or 9 (SVR)
    kt = KB_EV_PER_K * target
    mean_ratio = float(kin.mean()) / (0.5 * dof * kt)
    var_ratio = float(kin.var()) / (0.5 * dof * kt**2)
    assert abs(mean_ratio - 1.0) < 0.04, mean_ratio
    assert abs(var_ratio - 1.0) < 0.15, var_ratio


@pytest.mark.parametrize("ensemble", ["langevin", "svr"])
def test_thermostat_noise_is_seeded(ensemble: str) -> None:
    state = thermalised([argon_cluster()], 40.0)

    def run(seed: int) -> torch.Tensor:
        integrator = make_integrator(ensemble, 10.0, 40.0, seed=seed)
        return rollout(smooth_lj(), state, 5, integrator, RebuildNeighbors(8.5)).state.positions

    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))


def test_svr_thermostats_the_centre_of_mass_frame_and_keeps_a_drift() -> None:
    """Drifting Ar crystals under SVR: each system's total momentum is kept, the internal E_kin is canonical."""
    target = 40.0
    state = thermalised([argon_crystal()] * 64, 10.0)
    drift = torch.tensor([0.02, -0.01, 0.005], dtype=state.dtype)  # Å per ASE time: E_kin(COM) >> kT
    state = state.replace(momenta=state.momenta + state.masses[:, None] * drift)
    total = torch.zeros(64, 3, dtype=state.dtype).index_add(0, state.system, state.momenta)
    torch.testing.assert_close(state.temperature(), thermalised([argon_crystal()] * 64, 10.0).temperature())
    integrator = make_integrator("svr", 10.0, target, tau_fs=50.0, seed=3)
    samples = []

    def collect(step: int, s: MDState) -> None:
        if step >= 200 and step % 4 == 0:
            samples.append(s.temperature(com_removed=True))

    out = rollout(smooth_lj(), state, 1000, integrator, VerletNeighbors(8.5, 1.0), store=False, on_step=collect)
    after = torch.zeros(64, 3, dtype=state.dtype).index_add(0, out.state.system, out.state.momenta)
    torch.testing.assert_close(after, total, rtol=1e-10, atol=1e-12)
    t = torch.stack(samples)  # internal temperature: 2 E_kin / (9 k_B), E_kin ~ Gamma(9/2, kT)
    assert abs(float(t.mean()) / target - 1.0) < 0.04
    assert abs(float(t.var()) / (target**2 * 2 / 9) - 1.0) < 0.15
