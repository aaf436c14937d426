"""Integrators built from tiny splitting steps, as in JAX-MD and the splitting literature.

- **B** (kick): p += dt/2 F
- **A** (drift): x += dt p / m
- **O** (Ornstein-Uhlenbeck, Langevin): p = c p + sqrt((1 - c^2) m kT) ξ with c = exp(-γ dt/2)
- **R** (Bussi stochastic velocity rescaling): every system's kinetic energy is rescaled stochastically

NVE velocity Verlet = B A B; Langevin = O (B A B) O (OBABO keeps the Verlet core intact); SVR = R (B A B) R.
The B A B core evaluates forces once per step (the forces of the end of one step are reused at the start of
the next) and is a swappable object: a learned long-stride predictor can replace it and keep the same O/R
steps around it. The force evaluation is passed in as a callable, so integrators know nothing about models;
all operations are out-of-place so autograd can run through them (Dynamic Training).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from longmd.dynamics.state import MDState, degrees_of_freedom, kinetic_energy, remove_total_momentum
from longmd.units import KB_EV_PER_K, fs_to_ase_time

ForceFn = Callable[[MDState], MDState]
"""Takes a state at new positions (forces stale) and returns it with ``forces`` and ``energy`` set."""


def kick(state: MDState, dt: float) -> MDState:
    """B: p <- p + dt F (call with dt/2 for the half kicks of velocity Verlet)."""
    return state.replace(momenta=state.momenta + dt * state.forces)


def drift(state: MDState, dt: float) -> MDState:
    """A: x <- x + dt p / m; cached forces become stale."""
    return state.replace(positions=state.positions + dt * state.momenta / state.masses[:, None], forces=None,
                         energy=None)


def _generator_on(generator: torch.Generator | None, device: torch.device) -> torch.Generator | None:
    """The generator itself, or (first use on another device) a new one there with the same seed."""
    if generator is None or (generator.device.type == device.type and generator.device.index in (None, device.index)):
        return generator
    moved = torch.Generator(device=device)
    moved.manual_seed(generator.initial_seed())
    return moved


class VelocityVerlet:
    """The B A B core: one force evaluation per step."""

    def __call__(self, state: MDState, force_fn: ForceFn, dt: float) -> MDState:
        state = drift(kick(state, 0.5 * dt), dt)
        state = force_fn(state)
        return kick(state, 0.5 * dt)


@dataclass
class LangevinO:
    """O step: exact Ornstein-Uhlenbeck update of the momenta over a time ``dt`` (friction γ per ASE time)."""

    temperature_K: float
    friction: float  # 1 / ASE time
    generator: torch.Generator | None = None
    conserves_momentum: ClassVar[bool] = False

    def __call__(self, state: MDState, dt: float) -> MDState:
        c = math.exp(-self.friction * dt)
        kt = KB_EV_PER_K * self.temperature_K
        self.generator = _generator_on(self.generator, state.device)
        noise = torch.randn(state.momenta.shape, generator=self.generator, dtype=state.dtype, device=state.device)
        sigma = torch.sqrt((1.0 - c * c) * kt * state.masses)[:, None]
        return state.replace(momenta=c * state.momenta + sigma * noise)


@dataclass
class BussiR:
    """R step: Bussi-Donadio-Parrinello stochastic velocity rescaling over a time ``dt`` (relaxation τ)."""

    temperature_K: float
    tau: float  # ASE time
    generator: torch.Generator | None = None
    conserves_momentum: ClassVar[bool] = True
    _dof: tuple[torch.Tensor, torch.Tensor, int] | None = field(default=None, init=False, repr=False)

    def _degrees_of_freedom(self, state: MDState) -> tuple[torch.Tensor, int]:
        """(B,) 3N - 3 and its maximum, cached per batch (one host read when the systems change)."""
        if self._dof is None or self._dof[0] is not state.system:
            dof = degrees_of_freedom(state.system, state.n_systems, com_removed=True)
            self._dof = (state.system, dof.to(state.dtype), int(dof.max()))
        return self._dof[1], self._dof[2]

    def __call__(self, state: MDState, dt: float) -> MDState:
        """Rescales the momenta in each system's centre-of-mass frame; the total momentum is kept as it is."""
        n_sys = state.n_systems
        dof, max_dof = self._degrees_of_freedom(state)
        internal = remove_total_momentum(state.momenta, state.masses, state.system, n_sys)
        kin0 = kinetic_energy(internal, state.masses, state.system, n_sys)
        # A system at rest (or a lone atom) cannot be rescaled: keep it as it is. The clamp uses the dtype's
        # smallest normal number (a literal 1e-300 is 0 in float32 and gave 0 * inf = NaN momenta).
        kin = kin0.clamp_min(torch.finfo(state.dtype).tiny)
        target = 0.5 * dof * KB_EV_PER_K * self.temperature_K
        c = math.exp(-dt / self.tau)
        self.generator = _generator_on(self.generator, state.device)
        r1 = torch.randn(n_sys, generator=self.generator, dtype=state.dtype, device=state.device)
        # Sum of dof - 1 squared normals (a chi-squared draw), seeded through the same generator.
        extra = torch.randn(n_sys, max(max_dof - 1, 1), generator=self.generator, dtype=state.dtype,
                            device=state.device)
        mask = torch.arange(extra.shape[1], device=state.device)[None, :] < (dof[:, None] - 1)
        chi2 = (extra.pow(2) * mask).sum(1)
        new_kin = (
            c * kin
            + (1 - c) * target * (r1 * r1 + chi2) / dof
            + 2 * r1 * torch.sqrt(c * (1 - c) * target * kin / dof)
        )
        alpha = torch.where(kin0 > 0, torch.sqrt(new_kin.clamp_min(0) / kin), torch.ones_like(kin))
        sign = torch.where(r1 + torch.sqrt(c * kin * dof / ((1 - c) * target)) < 0, -1.0, 1.0).to(state.dtype)
        scale = (alpha * sign)[state.system][:, None]
        return state.replace(momenta=state.momenta - internal + internal * scale)


@dataclass
class Integrator:
    """``thermostat(dt/2) core(dt) thermostat(dt/2)``; no thermostat = NVE velocity Verlet.

    Attributes:
        timestep_fs: the step, fs. core: the B A B step (swappable). thermostat: an O or R step, or None.
    """

    timestep_fs: float
    core: Callable[[MDState, ForceFn, float], MDState] = field(default_factory=VelocityVerlet)
    thermostat: Callable[[MDState, float], MDState] | None = None
    name: str = "nve"

    @property
    def dt(self) -> float:
        """The step in ASE time units."""
        return fs_to_ase_time(self.timestep_fs)

    def step(self, state: MDState, force_fn: ForceFn) -> MDState:
        """One step; ``state.forces`` must hold the forces at ``state.positions``."""
        dt = self.dt
        if self.thermostat is not None:
            state = self.thermostat(state, 0.5 * dt)
        state = self.core(state, force_fn, dt)
        if self.thermostat is not None:
            state = self.thermostat(state, 0.5 * dt)
        return state

    @property
    def com_removed(self) -> bool:
        """Whether the total momentum is conserved (T then counts 3N - 3 degrees of freedom, in the COM frame)."""
        return self.thermostat is None or getattr(self.thermostat, "conserves_momentum", False)


ENSEMBLES = ("nve", "langevin", "svr")


def make_integrator(
    ensemble: str,
    timestep_fs: float,
    temperature_K: float | None = None,
    friction_per_fs: float = 0.01,
    tau_fs: float = 100.0,
    seed: int | None = None,
    device: torch.device | str = "cpu",
) -> Integrator:
    """``"nve"`` (B A B), ``"langevin"`` (O B A B O) or ``"svr"`` (R B A B R) with a seeded noise generator."""
    if ensemble not in ENSEMBLES:
        raise ValueError(f"unknown ensemble {ensemble!r} (choose from {', '.join(ENSEMBLES)})")
    if timestep_fs <= 0:
        raise ValueError(f"timestep_fs must be positive, got {timestep_fs}")
    if ensemble == "nve":
        return Integrator(timestep_fs)
    if temperature_K is None or temperature_K < 0:
        raise ValueError(f"ensemble {ensemble!r} needs a temperature_K >= 0")
    generator = torch.Generator(device=device)
    generator.manual_seed(0 if seed is None else int(seed))
    if ensemble == "langevin":
        thermostat = LangevinO(temperature_K, friction_per_fs / fs_to_ase_time(1.0), generator)
    else:
        thermostat = BussiR(temperature_K, fs_to_ase_time(tau_fs), generator)
    return Integrator(timestep_fs, thermostat=thermostat, name=ensemble)
