"""The one MD loop: used by ``simulate``, by validation rollouts and, with autograd, by Dynamic Training.

``rollout`` evaluates the forces at the initial positions (step 0), then runs ``n_steps`` integrator steps,
each with one model call at the new positions. What it keeps of the autograd graph is ``gradient``:

- ``"none"``: nothing (inference, long simulations; memory stays flat with ``store=False``);
- ``"full"``: the whole rollout (the DT paper): a force error at step s reaches the parameters through
  every earlier step's forces, via the positions and momenta they produced;
- ``"truncated:K"``: positions and momenta are cut from the graph every K steps (at steps 0, K, 2K, ...),
  so an error reaches back through at most K - 1 integration steps; K larger than the rollout = ``full``;
- ``"detached"`` (= ``truncated:1``): every step's positions are fresh leaves; each step's forces still
  carry the graph to the parameters (what the DT authors' code does in effect).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import Tensor, nn

from longmd.data.graph import Graph
from longmd.dynamics.integrators import Integrator
from longmd.dynamics.neighbor_policy import NeighborPolicy, VerletNeighbors
from longmd.dynamics.state import MDState
from longmd.models.base import predict


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


@dataclass
class Rollout:
    """What a rollout produced: per-step lists (n_steps + 1 entries, step 0 first) and the final state."""

    state: MDState
    forces: list[Tensor] = field(default_factory=list)
    energy: list[Tensor] = field(default_factory=list)
    positions: list[Tensor] = field(default_factory=list)
    momenta: list[Tensor] = field(default_factory=list)
    steps_done: int = 0


def compute_forces(model: nn.Module, state: MDState, neighbors: NeighborPolicy, step: int,
                   create_graph: bool = False) -> MDState:
    """The state with the model's forces and energy at its positions (neighbour list from the policy)."""
    edge_index, shifts = neighbors.edges(step, state)
    graph = Graph(state.positions, state.numbers, state.cell, state.system, edge_index, shifts)
    prediction = predict(model, graph, create_graph=create_graph)
    return state.replace(forces=prediction.forces, energy=prediction.energy)


def rollout(
    model: nn.Module,
    state: MDState,
    n_steps: int,
    integrator: Integrator,
    neighbors: NeighborPolicy,
    gradient: str = "none",
    store: bool = True,
    on_step: Callable[[int, MDState], bool | None] | None = None,
) -> Rollout:
    """Run ``n_steps`` MD steps of ``model`` from ``state`` (see the module doc for ``gradient``).

    ``on_step(step, state)`` is called after step 0 and every step; returning False stops the rollout.
    """
    create_graph, period = parse_gradient(gradient)
    step = 0

    def force_fn(s: MDState) -> MDState:
        if not create_graph or (period is not None and step % period == 0):
            s = s.replace(positions=s.positions.detach(), momenta=s.momenta.detach())
        return compute_forces(model, s, neighbors, step, create_graph)

    if state.forces is None or create_graph:
        state = force_fn(state)
    elif not create_graph:
        state = state.detach()
    result = Rollout(state=state)

    def record(s: MDState) -> bool:
        if store:
            keep = (lambda t: t) if create_graph else (lambda t: t.detach())
            result.forces.append(keep(s.forces))
            result.energy.append(keep(s.energy))
            result.positions.append(keep(s.positions))
            result.momenta.append(keep(s.momenta))
        return on_step is None or on_step(step, s) is not False

    go_on = record(state)
    while go_on and step < n_steps:
        step += 1
        state = integrator.step(state, force_fn)
        result.steps_done = step
        go_on = record(state)
    result.state = state
    return result


def rollout_dropping_failures(
    model: nn.Module,
    state: MDState,
    last_step: int,
    integrator: Integrator,
    neighbors: VerletNeighbors,
    on_step: Callable[[int, MDState, list[int]], list[int]],
    ids: list[int] | None = None,
    first_step: int = 0,
) -> tuple[MDState, list[int], int]:
    """Inference rollouts of independent systems in which a failing system leaves the batch and the others go on.

    ``on_step(step, state, ids)`` is called at every step from ``first_step`` to ``last_step`` (``ids[b]`` names
    system b of ``state``; default 0..B-1) and returns the positions in the batch of the systems that failed
    there (empty: none). The run then restarts at that step without them, from their own state and forces with
    a fresh neighbour list (``on_step`` is called again at that step for the survivors): systems are
    independent, so survivors follow the trajectory they would have followed alone.

    Returns the state of the survivors at the last step reached, their ids and that step.
    """
    ids = list(range(state.n_systems)) if ids is None else list(ids)
    step = first_step
    failed: list[int] = []

    def check(s: int, current: MDState) -> bool | None:  # s counts from the segment's start, ``step``
        failed[:] = on_step(step + s, current, ids)
        return False if failed else None

    while ids:
        failed.clear()
        segment = rollout(model, state, last_step - step, integrator, neighbors, store=False, on_step=check)
        step += segment.steps_done
        state = segment.state
        if not failed:
            break
        keep = sorted(set(range(len(ids))) - set(failed))
        ids = [ids[b] for b in keep]
        state = state.select(keep)
        neighbors.reset()
    return state, ids, step
