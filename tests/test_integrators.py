"""Integrators (B/A/O/R splitting steps) and Maxwell-Boltzmann momenta on an analytic Lennard-Jones system."""

from __future__ import annotations

import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.cluster import Icosahedron

from conftest import integrator, md, thermalised
from longmd.dynamics.cores import ForceField, VelocityVerlet
from longmd.dynamics.filters import CenterOfMassFilter, MarkBeforeCore
from longmd.dynamics.neighbor_policy import RebuildNeighbors, VerletNeighbors
from longmd.dynamics.propagator import Propagator, build_integrator
from longmd.dynamics.rollout import rollout
from longmd.dynamics.state import MDState, kinetic_energy, maxwell_boltzmann_momenta
from longmd.dynamics.steps import BussiR, LangevinO
from longmd.models.lj import LennardJones
from longmd.units import KB_EV_PER_K, fs_to_ase_time


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


def test_build_integrator_sequences() -> None:
    ff = ForceField(smooth_lj(), RebuildNeighbors(8.5))
    nve, langevin, svr = (build_integrator(ff, 1.0, e, 300.0) for e in ("nve", "langevin", "svr"))
    assert [type(s) for s in nve.steps] == [VelocityVerlet]
    assert [type(s) for s in langevin.steps] == [LangevinO, VelocityVerlet, LangevinO]
    assert [type(s) for s in svr.steps] == [BussiR, VelocityVerlet, BussiR]
    assert langevin.steps[0].dt == pytest.approx(0.5 * fs_to_ase_time(1.0))  # half steps around the core
    assert not langevin.com_removed and svr.com_removed and nve.com_removed
    filtered = build_integrator(ff, 1.0, "svr", 300.0, filters=["com", "energy"])
    assert [type(s).__name__ for s in filtered.steps] == ["BussiR", "MarkBeforeCore", "VelocityVerlet",
                                                          "CenterOfMassFilter", "EnergyFilter", "BussiR"]
    with pytest.raises(ValueError, match="ensemble"):
        build_integrator(ff, 1.0, "nose-hoover", 300.0)
    with pytest.raises(ValueError, match="temperature"):
        build_integrator(ff, 1.0, "svr")
    with pytest.raises(ValueError, match="filter"):
        build_integrator(ff, 1.0, filters=["magic"])


def energy_error(timestep_fs: float, total_fs: float = 1000.0) -> float:
    """Largest |E_tot(t) - E_tot(0)| per atom over ``total_fs`` of NVE."""
    state = thermalised([argon_crystal(2)], 60.0)
    result = md(smooth_lj(), state, round(total_fs / timestep_fs), integrator("nve", timestep_fs),
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
    model, make = smooth_lj(), integrator("nve", 10.0)
    forward = md(model, state, 60, make, RebuildNeighbors(8.5))
    end = forward.state
    back = md(model, end.replace(momenta=-end.momenta), 60, make, RebuildNeighbors(8.5))
    assert float((back.state.positions - state.positions).abs().max()) < 1e-10
    assert float((back.state.momenta + state.momenta).abs().max()) < 1e-10
    assert float((end.positions - state.positions).abs().max()) > 0.1  # it did move


def test_core_is_swappable() -> None:
    calls = []

    class CountingCore(VelocityVerlet):
        def __call__(self, state):
            calls.append(state.step)
            return super().__call__(state)

    state = thermalised([argon_cluster()], 40.0)
    ref = md(smooth_lj(), state, 5, integrator("nve", 5.0), RebuildNeighbors(8.5))
    core = CountingCore(ForceField(smooth_lj(), RebuildNeighbors(8.5)), fs_to_ase_time(5.0))
    out = rollout(Propagator([core], 5.0), state, 5)
    assert calls == [1, 2, 3, 4, 5]  # the propagator counts steps before its steps run
    torch.testing.assert_close(out.state.positions, ref.state.positions, rtol=0, atol=0)


def test_energy_filter_conserves_the_total_energy_exactly() -> None:
    """Velocity Verlet at a coarse step fluctuates in energy; with the energy filter the total energy of every
    step equals the first one to rounding, and the filter changes the trajectory only slightly."""
    state = thermalised([argon_crystal(2)], 60.0)
    plain = md(smooth_lj(), state, 50, integrator("nve", 20.0), VerletNeighbors(8.5, 1.0))
    filtered = md(smooth_lj(), state, 50, integrator("nve", 20.0, filters=["energy"]), VerletNeighbors(8.5, 1.0))

    def e_tot(result):
        return torch.stack([e + kinetic(p, state) for e, p in zip(result.energy, result.momenta, strict=True)])[:, 0]

    drift_plain = float((e_tot(plain) - e_tot(plain)[0]).abs().max())
    drift_filtered = float((e_tot(filtered) - e_tot(filtered)[0]).abs().max())
    assert drift_plain > 1e-4 and drift_filtered < 1e-10, (drift_plain, drift_filtered)
    total_p = torch.stack(filtered.momenta).sum(1)
    assert float(total_p.abs().max()) < 1e-10  # rescaling in the centre-of-mass frame keeps P = 0
    assert float((filtered.state.positions - plain.state.positions).abs().max()) < 0.05


def test_energy_filter_fails_loudly_when_it_cannot_repair() -> None:
    """An energy error larger than the kinetic energy (α² < 0) makes that system's momenta NaN, not silently 0."""
    state = thermalised([argon_cluster(), argon_cluster()], 40.0)
    mark, core, energy_filter = build_integrator(ForceField(smooth_lj(), RebuildNeighbors(8.5)), 5.0,
                                                 filters=["energy"]).steps
    marked = mark(core.init(state))
    lowered = marked.per_system["before_core_energy"] - torch.tensor([0.0, 10.0], dtype=torch.float64)
    after = energy_filter(core(marked.with_extras(per_system={"before_core_energy": lowered})))
    assert torch.isfinite(after.momenta[state.system == 0]).all()
    assert torch.isnan(after.momenta[state.system == 1]).all()


def test_center_of_mass_filter_restores_linear_motion() -> None:
    """A core that kicks every atom the same way (a learned step's momentum error): the COM filter keeps the total
    momentum and moves the centre of mass on its straight line."""

    class Drifting(VelocityVerlet):
        def __call__(self, state):
            out = super().__call__(state)
            return out.replace(momenta=out.momenta + 0.01, positions=out.positions + 0.02)

    state = thermalised([argon_cluster()], 40.0)
    state = state.replace(momenta=state.momenta + 0.003)  # a moving cluster
    dt = fs_to_ase_time(5.0)
    core = Drifting(ForceField(smooth_lj(), RebuildNeighbors(8.5)), dt)
    propagator = Propagator([MarkBeforeCore(), core, CenterOfMassFilter(dt)], 5.0)
    out = rollout(propagator, state, 10)
    p0 = state.momenta.sum(0)
    m = state.masses
    com = [(m[:, None] * x).sum(0) / m.sum() for x in out.positions]
    for k, (p, c) in enumerate(zip(out.momenta, com, strict=True)):
        torch.testing.assert_close(p.sum(0), p0, rtol=0, atol=1e-12)
        torch.testing.assert_close(c, com[0] + k * dt * p0 / m.sum(), rtol=0, atol=1e-10)


def kinetic(momenta: torch.Tensor, state: MDState) -> torch.Tensor:
    return kinetic_energy(momenta, state.masses, state.system, state.n_systems)


@pytest.mark.parametrize("ensemble", ["langevin", "svr"])
def test_thermostats_sample_the_canonical_kinetic_energy(ensemble: str) -> None:
    """64 four-atom Ar crystals from 10 K to 40 K: E_kin ~ Gamma(dof/2, kT) (mean and variance)."""
    target = 40.0
    state = thermalised([argon_crystal()] * 64, 10.0)
    make = integrator(ensemble, 10.0, target, friction_per_fs=0.02, tau_fs=50.0, seed=3)
    samples = []

    def collect(step: int, s: MDState) -> None:
        if step >= 200 and step % 4 == 0:
            samples.append(s.kinetic_energy())

    md(smooth_lj(), state, 1000, make, VerletNeighbors(8.5, 1.0), store=False, on_step=collect)
    kin = torch.stack(samples)  # (times, systems)
    dof = float(state.degrees_of_freedom(com_removed=ensemble == 'svr')[0])  # 12 (Langevin) or 9 (SVR)
    kt = KB_EV_PER_K * target
    mean_ratio = float(kin.mean()) / (0.5 * dof * kt)
    var_ratio = float(kin.var()) / (0.5 * dof * kt**2)
    assert abs(mean_ratio - 1.0) < 0.04, mean_ratio
    assert abs(var_ratio - 1.0) < 0.15, var_ratio


@pytest.mark.parametrize("ensemble", ["langevin", "svr"])
def test_thermostat_noise_is_seeded(ensemble: str) -> None:
    state = thermalised([argon_cluster()], 40.0)

    def run(seed: int) -> torch.Tensor:
        make = integrator(ensemble, 10.0, 40.0, seed=seed)
        return md(smooth_lj(), state, 5, make, RebuildNeighbors(8.5)).state.positions

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
    make = integrator("svr", 10.0, target, tau_fs=50.0, seed=3)
    samples = []

    def collect(step: int, s: MDState) -> None:
        if step >= 200 and step % 4 == 0:
            samples.append(s.temperature(com_removed=True))

    out = md(smooth_lj(), state, 1000, make, VerletNeighbors(8.5, 1.0), store=False, on_step=collect)
    after = torch.zeros(64, 3, dtype=state.dtype).index_add(0, out.state.system, out.state.momenta)
    torch.testing.assert_close(after, total, rtol=1e-10, atol=1e-12)
    t = torch.stack(samples)  # internal temperature: 2 E_kin / (9 k_B), E_kin ~ Gamma(9/2, kT)
    assert abs(float(t.mean()) / target - 1.0) < 0.04
    assert abs(float(t.var()) / (target**2 * 2 / 9) - 1.0) < 0.15
