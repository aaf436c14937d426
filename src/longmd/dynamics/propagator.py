"""Propagators: an ordered list of steps, and the one builder of integrators.

A :class:`Propagator` applies its steps in order once per call and counts ``state.step``; ``init(state)``
gives every step that has one its start (the core evaluates step 0's forces). The builder makes every
integrator longmd runs (training, validation, ``simulate``, ``evaluate``, benchmarks):

    NVE        = [core]                      (core = B A B around a force field, or a learned stride)
    Langevin   = [O(dt/2), core, O(dt/2)]    (OBABO keeps the Verlet core intact)
    SVR        = [R(dt/2), core, R(dt/2)]
    + filters  = [..., mark, core, filters..., ...]  (see :mod:`longmd.dynamics.filters`)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from longmd.dynamics.cores import ForceField, LearnedStride, VelocityVerlet
from longmd.dynamics.filters import CenterOfMassFilter, EnergyFilter, MarkBeforeCore, RandomRotation
from longmd.dynamics.state import MDState
from longmd.dynamics.steps import BussiR, LangevinO, Step
from longmd.units import fs_to_ase_time

ENSEMBLES = ("nve", "langevin", "svr")
FILTERS = ("com", "energy", "rotation")


@dataclass
class Propagator:
    """Steps applied in order; one call advances the state by ``timestep_fs`` and ``state.step`` by one."""

    steps: list[Step]
    timestep_fs: float
    name: str = "nve"

    def init(self, state: MDState) -> MDState:
        """The start state: momenta constrained (:meth:`MDState.constrained`), then each step's ``init`` in order
        (the core's evaluates forces where it has them)."""
        state = state.constrained()
        for step in self.steps:
            init = getattr(step, "init", None)
            if init is not None:
                state = init(state)
        return state

    def __call__(self, state: MDState) -> MDState:
        state = state.replace(step=state.step + 1)
        for step in self.steps:
            state = step(state)
        return state

    def reset(self) -> None:
        """The atoms of the batch changed (a replica left): neighbour lists and caches start again."""
        for step in self.steps:
            reset = getattr(step, "reset", None)
            if reset is not None:
                reset()

    @property
    def com_removed(self) -> bool:
        """Whether the total momentum is conserved (T then counts 3N - 3 degrees of freedom, in the COM frame)."""
        return all(getattr(step, "conserves_momentum", True) for step in self.steps)

    @property
    def generators(self) -> list[torch.Generator]:
        """The random generators of the steps (thermostat noise), for checkpoints."""
        return [g for step in self.steps if (g := getattr(step, "generator", None)) is not None]


def make_core(evaluator: ForceField | LearnedStride, timestep_fs: float) -> Step:
    """B A B around a force field, or a learned stride around a predictor of that stride."""
    if isinstance(evaluator, ForceField):
        return VelocityVerlet(evaluator, fs_to_ase_time(timestep_fs))
    if isinstance(evaluator, LearnedStride):
        stride = float(evaluator.predictor.timestep_fs)
        if abs(stride - timestep_fs) > 1e-9 * max(stride, 1.0):
            raise ValueError(f"the stride predictor was trained for {stride} fs steps, not {timestep_fs} fs")
        return evaluator
    raise TypeError(f"build_integrator: a ForceField or a LearnedStride core, not {type(evaluator).__name__}")


def build_integrator(
    evaluator: ForceField | LearnedStride,
    timestep_fs: float,
    ensemble: str = "nve",
    temperature_K: float | None = None,
    friction_per_fs: float = 0.01,
    tau_fs: float = 100.0,
    seed: int | None = None,
    device: torch.device | str = "cpu",
    filters: Sequence[str | Step] = (),
    energy_model: ForceField | None = None,
) -> Propagator:
    """The integrator of ``ensemble`` (nve | langevin | svr) around ``evaluator``'s core, with ``filters``
    ("com", "energy" or step objects) right after the core ("rotation" wraps a learned stride) and a seeded noise
    generator on ``device``.
    ``energy_model``: the energy the "energy" filter conserves when the core gives none (a learned stride)."""
    if ensemble not in ENSEMBLES:
        raise ValueError(f"unknown ensemble {ensemble!r} (choose from {', '.join(ENSEMBLES)})")
    if not timestep_fs > 0:
        raise ValueError(f"timestep_fs must be positive, got {timestep_fs}")
    core = make_core(evaluator, timestep_fs)
    dt = fs_to_ase_time(timestep_fs)
    if "rotation" in filters:  # wraps the core rather than following it
        if not isinstance(evaluator, LearnedStride):
            raise ValueError("the rotation filter is for learned strides (velocity Verlet is rotation-equivariant)")
        turns = torch.Generator(device=device)
        turns.manual_seed(1 + (0 if seed is None else int(seed)))
        core = RandomRotation(core, turns)
        filters = [f for f in filters if f != "rotation"]
    after = [_filter(f, dt, evaluator, energy_model) for f in filters]
    steps: list[Step] = [*([MarkBeforeCore()] if after else []), core, *after]
    if ensemble == "nve":
        return Propagator(steps, timestep_fs, "nve")
    if temperature_K is None or temperature_K < 0:
        raise ValueError(f"ensemble {ensemble!r} needs a temperature_K >= 0")
    generator = torch.Generator(device=device)
    generator.manual_seed(0 if seed is None else int(seed))
    if ensemble == "langevin":
        half = LangevinO(temperature_K, friction_per_fs / fs_to_ase_time(1.0), 0.5 * dt, generator)
    else:
        half = BussiR(temperature_K, fs_to_ase_time(tau_fs), 0.5 * dt, generator)
    return Propagator([half, *steps, half], timestep_fs, ensemble)


def _filter(spec: str | Step, dt: float, evaluator, energy_model: ForceField | None) -> Step:
    if not isinstance(spec, str):
        return spec
    if spec == "com":
        return CenterOfMassFilter(dt)
    if spec == "energy":
        if isinstance(evaluator, ForceField):
            return EnergyFilter(None)
        if energy_model is None:
            raise ValueError("the energy filter of a learned stride needs a companion energy model (energy_model)")
        return EnergyFilter(energy_model)
    raise ValueError(f"unknown filter {spec!r} (choose from {', '.join(FILTERS)})")
