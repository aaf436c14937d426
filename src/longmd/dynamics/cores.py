"""Propagator cores: what advances the atoms by one step, each owning its evaluator.

- :class:`VelocityVerlet` (B A B) around a :class:`ForceField` (a potential plus where its neighbour lists come
  from): one force evaluation per step, the end-of-step forces reused at the start of the next;
- :class:`LearnedStride` around a stride predictor (a model mapping positions and momenta to the state one
  stride later, FlashMD-style): no forces at all.

A core is a step (``state -> state``) with ``init(state)`` (step 0's evaluation) and ``reset()`` (the atoms of
the batch changed). How much of the autograd graph a core keeps is its :class:`GradientMode`.
"""

from __future__ import annotations

import torch
from torch import nn

from longmd.data.graph import Graph
from longmd.dynamics.neighbor_policy import NeighborPolicy
from longmd.dynamics.state import MDState
from longmd.dynamics.steps import drift, kick
from longmd.models.base import predict
from longmd.models.stride import StridePredictor


class GradientMode:
    """What a rollout keeps of the autograd graph (``rollout_gradient`` of training):

    - ``"none"``: nothing (inference, long simulations);
    - ``"full"``: the whole rollout (the DT paper): an error at step s reaches the parameters through every
      earlier step, via the positions and momenta they produced;
    - ``"truncated:K"``: positions and momenta are cut from the graph at steps 0, K, 2K, ..., so an error reaches
      back through at most K - 1 integration steps (K beyond the rollout = ``full``);
    - ``"detached"`` (= ``truncated:1``): every step's positions are fresh leaves; each step's forces still carry
      the graph to the parameters (what the DT authors' code does in effect).
    """

    def __init__(self, gradient: str = "none") -> None:
        self.name = gradient
        self.create_graph, self.period = parse_gradient(gradient)

    def cut(self, state: MDState) -> MDState:
        """The state with positions and momenta cut from the graph where the mode says so (at ``state.step``)."""
        if not self.create_graph or (self.period is not None and state.step % self.period == 0):
            return state.replace(positions=state.positions.detach(), momenta=state.momenta.detach())
        return state


def parse_gradient(gradient: str) -> tuple[bool, int | None]:
    """(create_graph, truncation period K or None) of a gradient mode."""
    if gradient == "none":
        return False, None
    if gradient == "full":
        return True, None
    if gradient == "detached":
        return True, 1
    if gradient.startswith("truncated:"):
        value = gradient.split(":", 1)[1]
        if value.isdigit() and int(value) >= 1:
            return True, int(value)
    raise ValueError(f"gradient must be none | full | detached | truncated:K (K >= 1), got {gradient!r}")


class ForceField:
    """A potential and its neighbour lists: ``state -> state`` with forces and energy at its positions
    (``forces=False``: the energy only, e.g. a companion model that filters a learned stride)."""

    def __init__(self, model: nn.Module, neighbors: NeighborPolicy, gradient: str = "none",
                 forces: bool = True) -> None:
        self.model, self.neighbors, self.gradient = model, neighbors, GradientMode(gradient)
        self.forces = forces

    @property
    def cutoff(self) -> float:
        return float(self.model.cutoff)

    def __call__(self, state: MDState) -> MDState:
        state = self.gradient.cut(state)
        edge_index, shifts = self.neighbors.edges(state.step, state)
        graph = Graph(state.positions, state.numbers, state.cell, state.system, edge_index, shifts)
        if not self.forces:
            with torch.set_grad_enabled(self.gradient.create_graph):
                return state.replace(energy=self.model(graph))
        prediction = predict(self.model, graph, create_graph=self.gradient.create_graph)
        return state.replace(forces=prediction.forces, energy=prediction.energy)

    def ensure(self, state: MDState) -> MDState:
        """Forces (or the energy) at the start: evaluated unless the state carries them and no graph is wanted."""
        if (state.forces if self.forces else state.energy) is None or self.gradient.create_graph:
            return self(state)
        return state.detach()

    def reset(self) -> None:
        reset_neighbors(self.neighbors)


class VelocityVerlet:
    """The B A B core over ``dt`` (ASE time): one force evaluation per step."""

    def __init__(self, force_field: ForceField, dt: float) -> None:
        self.force_field, self.dt = force_field, float(dt)

    def init(self, state: MDState) -> MDState:
        return self.force_field.ensure(state)

    def reset(self) -> None:
        self.force_field.reset()

    def __call__(self, state: MDState) -> MDState:
        state = drift(kick(state, 0.5 * self.dt), self.dt)
        state = self.force_field(state)
        return kick(state, 0.5 * self.dt)


class LearnedStride:
    """One predictor call per step: x' = x + Δx, p' = predicted, both constrained (fixed atoms stay, a fixed
    centre of mass does not move). The state then has no forces or energy."""

    def __init__(self, predictor: StridePredictor, neighbors: NeighborPolicy | None = None,
                 gradient: str = "none") -> None:
        self.predictor, self.neighbors, self.gradient = predictor, neighbors, GradientMode(gradient)

    def init(self, state: MDState) -> MDState:
        check = getattr(self.predictor, "check_state", None)
        if check is not None:  # masses the predictor was not trained for are refused
            check(state)
        return state if self.gradient.create_graph else state.detach()

    def reset(self) -> None:
        reset_neighbors(self.neighbors)

    def __call__(self, state: MDState) -> MDState:
        state = self.gradient.cut(state)
        edges = None if self.neighbors is None else self.neighbors.edges(state.step, state)
        displacement, momenta, *extras = self.predictor(state, edges)
        if not self.gradient.create_graph:
            displacement, momenta = displacement.detach(), momenta.detach()
        if extras:  # per-system values the predictor reports (a committee's spread)
            state = state.with_extras(per_system=extras[0])
        return state.replace(positions=state.positions + state.constrain(displacement, momenta=False),
                             momenta=state.constrain(momenta), forces=None, energy=None)


def reset_neighbors(neighbors: NeighborPolicy | None) -> None:
    """Start a neighbour policy afresh (the atoms of the batch changed); policies without state have no reset."""
    reset = getattr(neighbors, "reset", None)
    if reset is not None:
        reset()


def evaluator_for(model: nn.Module, neighbors: NeighborPolicy, gradient: str = "none") -> ForceField | LearnedStride:
    """The core evaluator of any model: a learned stride for a stride predictor (with ``neighbors`` only when it
    reads a neighbour list), else a force field on ``neighbors``."""
    if isinstance(model, StridePredictor):
        return LearnedStride(model, neighbors if model.cutoff else None, gradient)
    return ForceField(model, neighbors, gradient)
