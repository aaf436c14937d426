"""The one MD loop: used by ``simulate``, by validation rollouts and, with autograd, by Dynamic Training.

``rollout(propagator, state, n_steps)`` knows no model: ``propagator.init`` makes step 0 (a force-field core
evaluates the forces there), then each of the ``n_steps`` calls advances the state. It records what the state
holds at every step: positions and momenta always, forces and energy where the core gives them, and the
per-atom / per-system extras. How much autograd graph is kept is the core's gradient mode
(:class:`~longmd.dynamics.cores.GradientMode`): the records keep whatever graph the states carry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import Tensor

from longmd.dynamics.propagator import Propagator
from longmd.dynamics.state import MDState

RECORDED = ("positions", "momenta", "forces", "energy")


@dataclass
class Rollout:
    """What a rollout produced: per-step lists (n_steps + 1 entries, step 0 first) and the final state.

    ``forces`` and ``energy`` stay empty for a core that gives none; ``extras`` maps each extra's name to its
    per-step list.
    """

    state: MDState
    forces: list[Tensor] = field(default_factory=list)
    energy: list[Tensor] = field(default_factory=list)
    positions: list[Tensor] = field(default_factory=list)
    momenta: list[Tensor] = field(default_factory=list)
    extras: dict[str, list[Tensor]] = field(default_factory=dict)
    steps_done: int = 0

    def series(self, name: str) -> list[Tensor]:
        """The per-step list of a state field or extra (e.g. for a named loss term)."""
        if name in RECORDED:
            return getattr(self, name)
        if name in self.extras:
            return self.extras[name]
        raise KeyError(f"the rollout recorded no {name!r} (it has {', '.join(self.recorded)})")

    @property
    def recorded(self) -> list[str]:
        return [n for n in RECORDED if getattr(self, n)] + list(self.extras)

    def add(self, state: MDState) -> None:
        for name in RECORDED:
            value = getattr(state, name)
            if value is not None:
                getattr(self, name).append(value)
        for name, value in {**state.per_atom, **state.per_system}.items():
            self.extras.setdefault(name, []).append(value)


def rollout(
    propagator: Propagator,
    state: MDState,
    n_steps: int,
    store: bool = True,
    on_step: Callable[[int, MDState], bool | None] | None = None,
) -> Rollout:
    """Run ``n_steps`` propagator steps from ``state``; ``store=False`` keeps only the final state (memory stays
    flat). ``on_step(k, state)`` is called after step 0 and every step k (counted from this call's start);
    returning False stops the rollout."""
    state = propagator.init(state)
    result = Rollout(state=state)
    step = 0

    def record(s: MDState) -> bool:
        if store:
            result.add(s)
        return on_step is None or on_step(step, s) is not False

    go_on = record(state)
    while go_on and step < n_steps:
        step += 1
        state = propagator(state)
        result.steps_done = step
        go_on = record(state)
    result.state = state
    return result


def rollout_dropping_failures(
    propagator: Propagator,
    state: MDState,
    last_step: int,
    on_step: Callable[[int, MDState, list[int]], list[int]],
    ids: list[int] | None = None,
    first_step: int = 0,
) -> tuple[MDState, list[int], int]:
    """Inference rollouts of independent systems in which a failing system leaves the batch and the others go on.

    ``on_step(step, state, ids)`` is called at every step from ``first_step`` to ``last_step`` (``ids[b]`` names
    system b of ``state``; default 0..B-1) and returns the positions in the batch of the systems that failed
    there (empty: none). The run then restarts at that step without them, from their own state (and forces)
    with fresh neighbour lists (``on_step`` is called again at that step for the survivors): systems are
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
        segment = rollout(propagator, state, last_step - step, store=False, on_step=check)
        step += segment.steps_done
        state = segment.state
        if not failed:
            break
        keep = sorted(set(range(len(ids))) - set(failed))
        ids = [ids[b] for b in keep]
        state = state.select(keep)
        propagator.reset()
    return state, ids, step
