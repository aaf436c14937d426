"""Inference-time filters: steps that correct what a core did (FlashMD's filters, for any core).

A filter compares the state after the core with the state just before it, which :class:`MarkBeforeCore`
(placed right before the core by :func:`~longmd.dynamics.propagator.build_integrator`) records in the state's
per-system extras: total momentum, centre of mass and, when the state has an energy, the total energy.

- :class:`CenterOfMassFilter`: the total momentum stays as it was and the centre of mass moves on a straight
  line, x_com' = x_com + dt P / M (a learned step may violate both);
- :class:`RandomRotation` (around the core, not after it): the core steps in a randomly rotated frame;
- :class:`EnergyFilter`: momenta in each system's centre-of-mass frame are rescaled by
  α = sqrt(1 - (E' - E) / K'_int) so that the total energy equals the one before the core. A system with
  α² < 0 (the error exceeds its internal kinetic energy) cannot be repaired: its momenta become NaN, so the
  replica check stops it loudly; α is kept in the per-system extra ``energy_filter_alpha``. Needs the energy
  after the core: the state's (a force-field core) or that of ``energy_model`` (a
  :class:`~longmd.dynamics.cores.ForceField`, energy only, for cores without energies).

Constraints: a system with fixed atoms does not conserve its total momentum (the fixed atoms take it up), so the
centre-of-mass filter leaves it alone, and the energy filter rescales all its momenta (fixed ones stay zero).
"""

from __future__ import annotations

import torch
from torch import Tensor

from longmd.dynamics.cores import ForceField
from longmd.dynamics.state import MDState, kinetic_energy, per_system_sum
from longmd.dynamics.steps import generator_on

_P, _COM, _E = "before_core_momentum", "before_core_com", "before_core_energy"
ALPHA = "energy_filter_alpha"  # the per-system rescaling factor of the last step, kept for the thermo log


def center_of_mass(state: MDState) -> Tensor:
    """(B, 3) centre of mass of each system (positions are unwrapped), Å."""
    total_m = per_system_sum(state.masses, state.system, state.n_systems)
    return per_system_sum(state.masses[:, None] * state.positions, state.system, state.n_systems) / total_m[:, None]


class MarkBeforeCore:
    """Records total momentum, centre of mass and (if known) total energy before the core step."""

    def __call__(self, state: MDState) -> MDState:
        marks = {_P: per_system_sum(state.momenta, state.system, state.n_systems), _COM: center_of_mass(state)}
        if state.energy is not None:
            marks[_E] = state.energy + state.kinetic_energy()
        return state.with_extras(per_system=marks)


class CenterOfMassFilter:
    """Restores the total momentum and the linear motion of the centre of mass over a step of ``dt``."""

    conserves_momentum = True

    def __init__(self, dt: float) -> None:
        self.dt = float(dt)

    def __call__(self, state: MDState) -> MDState:
        n, system, m = state.n_systems, state.system, state.masses
        total_m = per_system_sum(m, system, n)
        p_before = state.per_system[_P]
        excess = per_system_sum(state.momenta, system, n) - p_before
        momenta = state.momenta - m[:, None] * (excess / total_m[:, None])[system]
        target = state.per_system[_COM] + self.dt * p_before / total_m[:, None]
        positions = state.positions - (center_of_mass(state) - target)[system]
        if state.fixed is not None:  # systems with fixed atoms keep what the (constrained) core gave
            held = state.has_fixed_atoms()[system][:, None]
            positions = torch.where(held, state.positions, positions)
            momenta = torch.where(held, state.momenta, momenta)
        return state.replace(positions=positions, momenta=momenta)


class EnergyFilter:
    """Rescales internal momenta so the total energy equals the one before the core (see the module doc)."""

    def __init__(self, energy_model: ForceField | None = None) -> None:
        self.energy_model = energy_model

    def init(self, state: MDState) -> MDState:
        if state.energy is None and self.energy_model is not None:
            state = self.energy_model.ensure(state)
        return state

    def __call__(self, state: MDState) -> MDState:
        if state.energy is None:
            if self.energy_model is None:
                raise ValueError("EnergyFilter: the core gives no energy; pass an energy_model")
            state = self.energy_model(state)
        if _E not in state.per_system:
            raise ValueError("EnergyFilter: no energy before the core (the state had none: evaluate it first)")
        n, system, m = state.n_systems, state.system, state.masses
        internal = state.internal_momenta()
        k_int = kinetic_energy(internal, m, system, n)
        error = state.energy + state.kinetic_energy() - state.per_system[_E]
        alpha2 = 1.0 - error / k_int
        alpha = alpha2.clamp_min(0).sqrt().masked_fill(alpha2 < 0, float("nan"))
        state = state.with_extras(per_system={ALPHA: alpha.detach()})
        return state.replace(momenta=state.momenta - internal + internal * alpha[system][:, None])


def random_rotations(n: int, generator: torch.Generator | None, dtype: torch.dtype,
                     device: torch.device) -> Tensor:
    """(n, 3, 3) rotation matrices drawn uniformly (QR of Gaussian matrices, signs fixed, det +1)."""
    q, r = torch.linalg.qr(torch.randn(n, 3, 3, generator=generator, dtype=dtype, device=device))
    q = q * torch.sign(torch.diagonal(r, dim1=1, dim2=2))[:, None, :]
    return q * torch.sign(torch.linalg.det(q))[:, None, None]


class RandomRotation:
    """Wraps a learned-stride core: each step every system is turned by a random rotation about its centre of
    mass (positions, momenta, cell), the core steps, and the result is turned back. FlashMD's filter for
    predictors that are not rotation-equivariant (their errors then average out instead of drifting one way);
    for an equivariant predictor it changes nothing but round-off."""

    def __init__(self, core, generator: torch.Generator | None = None) -> None:
        self.core, self.generator = core, generator

    def init(self, state: MDState) -> MDState:
        return self.core.init(state)

    def reset(self) -> None:
        self.core.reset()

    def __call__(self, state: MDState) -> MDState:
        self.generator = generator_on(self.generator, state.device)
        rotation = random_rotations(state.n_systems, self.generator, state.dtype, state.device)
        com = center_of_mass(state)[state.system]

        def turn(s: MDState, r: Tensor) -> MDState:
            per_atom = r[s.system]
            return s.replace(positions=torch.einsum("nj,nij->ni", s.positions - com, per_atom) + com,
                             momenta=torch.einsum("nj,nij->ni", s.momenta, per_atom),
                             cell=torch.einsum("bkj,bij->bki", s.cell, r))

        return turn(self.core(turn(state, rotation)), rotation.transpose(1, 2))
