"""The tiny steps propagators are made of, each a map ``state -> state`` over a fixed time ``dt``.

- **B** (:class:`Kick`): p += dt F (velocity Verlet uses two of dt/2);
- **A** (:class:`Drift`): x += dt p / m;
- **O** (:class:`LangevinO`): exact Ornstein-Uhlenbeck update p = c p + sqrt((1 - c^2) m kT) ξ, c = exp(-γ dt);
- **R** (:class:`BussiR`): Bussi-Donadio-Parrinello stochastic rescaling of each system's kinetic energy.

Filters are steps too (:mod:`longmd.dynamics.filters`). A step may define ``init(state) -> state``, called once
by :meth:`~longmd.dynamics.propagator.Propagator.init` before the first step (e.g. to remember a conserved
quantity in the state's extras). Every operation is out of place, so autograd runs through them (Dynamic
Training). Thermostats with ``conserves_momentum`` False (Langevin) change the total momentum. Every step that
changes momenta leaves them on the state's constraint surface (:meth:`MDState.constrain`: fixed atoms at rest,
FixCom systems without centre-of-mass motion), so a drift never moves a fixed atom.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import torch

from longmd.dynamics.state import MDState, kinetic_energy
from longmd.units import KB_EV_PER_K


class Step(Protocol):
    """One piece of a propagator: ``state -> state`` (an optional ``init(state) -> state`` runs once first)."""

    def __call__(self, state: MDState) -> MDState: ...


def kick(state: MDState, dt: float) -> MDState:
    """B: p <- p + dt F (constrained: fixed atoms and a fixed centre of mass take no kick)."""
    return state.replace(momenta=state.constrain(state.momenta + dt * state.forces))


def drift(state: MDState, dt: float) -> MDState:
    """A: x <- x + dt p / m; cached forces and energy become stale."""
    return state.replace(positions=state.positions + dt * state.momenta / state.masses[:, None], forces=None,
                         energy=None)


@dataclass
class Kick:
    """B over ``dt`` (ASE time): needs the forces at the current positions."""

    dt: float

    def __call__(self, state: MDState) -> MDState:
        return kick(state, self.dt)


@dataclass
class Drift:
    """A over ``dt`` (ASE time)."""

    dt: float

    def __call__(self, state: MDState) -> MDState:
        return drift(state, self.dt)


def generator_on(generator: torch.Generator | None, device: torch.device) -> torch.Generator | None:
    """The generator itself, or (first use on another device) a new one there with the same seed."""
    if generator is None or (generator.device.type == device.type and generator.device.index in (None, device.index)):
        return generator
    moved = torch.Generator(device=device)
    moved.manual_seed(generator.initial_seed())
    return moved


@dataclass
class LangevinO:
    """O: exact Ornstein-Uhlenbeck update of the momenta over ``dt`` (friction γ per ASE time)."""

    temperature_K: float
    friction: float  # 1 / ASE time
    dt: float  # ASE time
    generator: torch.Generator | None = None
    conserves_momentum: ClassVar[bool] = False

    def __call__(self, state: MDState) -> MDState:
        c = math.exp(-self.friction * self.dt)
        kt = KB_EV_PER_K * self.temperature_K
        self.generator = generator_on(self.generator, state.device)
        noise = torch.randn(state.momenta.shape, generator=self.generator, dtype=state.dtype, device=state.device)
        sigma = torch.sqrt((1.0 - c * c) * kt * state.masses)[:, None]
        return state.replace(momenta=state.constrain(c * state.momenta + sigma * noise))


@dataclass
class BussiR:
    """R: stochastic velocity rescaling over ``dt`` with relaxation time ``tau`` (both ASE time)."""

    temperature_K: float
    tau: float
    dt: float
    generator: torch.Generator | None = None
    conserves_momentum: ClassVar[bool] = True
    _dof: tuple[torch.Tensor, torch.Tensor, int] | None = field(default=None, init=False, repr=False)

    def _degrees_of_freedom(self, state: MDState) -> tuple[torch.Tensor, int]:
        """(B,) degrees of freedom (3N - 3, constraints counted) and their maximum, cached per batch (one host
        read when the systems change)."""
        if self._dof is None or self._dof[0] is not state.system:
            dof = state.degrees_of_freedom(com_removed=True).long()
            self._dof = (state.system, dof.to(state.dtype), int(dof.max()))
        return self._dof[1], self._dof[2]

    def __call__(self, state: MDState) -> MDState:
        """Rescales the momenta in each system's centre-of-mass frame (a system with fixed atoms: all its
        momenta); the total momentum is kept as it is."""
        n_sys = state.n_systems
        dof, max_dof = self._degrees_of_freedom(state)
        internal = state.internal_momenta()
        kin0 = kinetic_energy(internal, state.masses, state.system, n_sys)
        # A system at rest (or a lone atom) cannot be rescaled: keep it as it is. The clamp uses the dtype's
        # smallest normal number (a literal 1e-300 is 0 in float32 and gave 0 * inf = NaN momenta).
        kin = kin0.clamp_min(torch.finfo(state.dtype).tiny)
        target = 0.5 * dof * KB_EV_PER_K * self.temperature_K
        c = math.exp(-self.dt / self.tau)
        self.generator = generator_on(self.generator, state.device)
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
