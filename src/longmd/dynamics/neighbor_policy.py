"""Where the neighbour list of each MD step comes from.

- :class:`GivenNeighbors`: lists computed beforehand (DT training takes them from the reference
  trajectory: a neighbour search is a step function, not differentiable), reused for k steps.
- :class:`VerletNeighbors`: a list with cutoff + skin, rebuilt per system when one of its atoms has moved more than
  skin / 2 since the last build (simulation, validation rollouts).
- :class:`RebuildNeighbors`: a fresh list every step (the reference that Verlet lists are tested against).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor

from longmd.dynamics.state import MDState
from longmd.neighbors import batched_neighbor_list

Edges = tuple[Tensor, Tensor]


class NeighborPolicy(Protocol):
    def edges(self, step: int, state: MDState) -> Edges:
        """(edge_index (2, E), shifts (E, 3)) for the positions of ``state`` at ``step``."""
        ...


class GivenNeighbors:
    """Precomputed lists, one per step; step s uses the list of step (s // k) * k."""

    def __init__(self, edges_per_step: Sequence[Edges], update_every: int = 1) -> None:
        if update_every < 1:
            raise ValueError(f"update_every must be >= 1, got {update_every}")
        self.edges_per_step = list(edges_per_step)
        self.update_every = int(update_every)

    def edges(self, step: int, state: MDState) -> Edges:
        index = (step // self.update_every) * self.update_every
        if index >= len(self.edges_per_step):
            raise IndexError(f"no neighbour list given for step {index} ({len(self.edges_per_step)} lists)")
        return self.edges_per_step[index]


class RebuildNeighbors:
    """A fresh radius graph at every step."""

    def __init__(self, cutoff: float) -> None:
        self.cutoff = float(cutoff)
        self.builds = 0

    def edges(self, step: int, state: MDState) -> Edges:
        self.builds += 1
        return batched_neighbor_list(state.positions, state.cell, state.pbc, state.system, self.cutoff)


class VerletNeighbors:
    """Verlet list: radius cutoff + skin, rebuilt per system when one of its atoms moved more than skin / 2 since
    that system's last build (or its cell changed); the other systems of the batch keep their lists.

    Pairs that come within the cutoff between rebuilds were within cutoff + skin at the build, so results
    equal a fresh list every step (the model ignores pairs beyond its cutoff). Call :meth:`reset` when
    the atoms of the batch change (e.g. a replica is removed). ``builds`` counts steps with a (partial or full)
    build, ``system_builds`` the systems searched in all.

    A step reads one flag per system from the device (its list is stale). With ``isolate_nonfinite`` a system with
    a NaN/inf coordinate is searched as a non-periodic line of far-apart atoms (no pairs), so the search cannot fail
    and the other systems are untouched; this costs no extra read (a non-finite displacement always triggers a
    build). Without it such positions make the search raise.
    """

    def __init__(self, cutoff: float, skin: float = 1.0, isolate_nonfinite: bool = False) -> None:
        if skin < 0:
            raise ValueError(f"skin must be >= 0, got {skin}")
        self.cutoff, self.skin = float(cutoff), float(skin)
        self.isolate_nonfinite = isolate_nonfinite
        self.builds = 0
        self.system_builds = 0
        self._reference: Tensor | None = None
        self._cell: Tensor | None = None
        self._edges: Edges | None = None
        self._atom_counts: list[int] | None = None

    def reset(self) -> None:
        self._reference, self._cell, self._edges, self._atom_counts = None, None, None, None

    def state_dict(self) -> dict | None:
        """Positions and cells of the last builds (None before one), for checkpoints."""
        if self._reference is None:
            return None
        return {"positions": self._reference.cpu(), "cell": self._cell.cpu()}

    def load_state_dict(self, saved: dict | None, state: MDState) -> None:
        """Rebuild the lists from the positions of the saved builds (the same pairs in the same order as before the
        checkpoint); ``state`` gives the batch's pbc and systems."""
        self.reset()
        if saved is None or saved["positions"].shape != state.positions.shape:
            return
        build = state.replace(positions=saved["positions"].to(state.positions), cell=saved["cell"].to(state.cell))
        builds, system_builds = self.builds, self.system_builds
        self.edges(0, build)
        self.builds, self.system_builds = builds, system_builds  # a rebuild of lists the run already counted

    @property
    def current(self) -> Edges | None:
        """The list in use (cutoff + skin), or None before the first build."""
        return self._edges

    def edges(self, step: int, state: MDState) -> Edges:
        positions, cell = state.positions.detach(), state.cell.detach()
        stale = self._stale(positions, cell, state.system)
        if stale is None or all(stale):
            self._edges = self._search(positions, cell, state.pbc, state.system)
            self._reference, self._cell, self._atom_counts = positions.clone(), cell.clone(), None
            self._count(len(cell))
        elif any(stale):
            self._rebuild(positions, cell, state.pbc, state.system, stale)
        return self._edges

    def _stale(self, positions: Tensor, cell: Tensor, system: Tensor) -> list[bool] | None:
        """Per system, whether its list must be rebuilt (the step's one read); None when there is no list to keep."""
        if self._reference is None or self._reference.shape != positions.shape or self._cell.shape != cell.shape:
            return None
        moved = (positions - self._reference).norm(dim=-1)
        largest = torch.zeros(len(cell), dtype=moved.dtype, device=moved.device).scatter_reduce(
            0, system, moved, reduce="amax", include_self=True)
        # a NaN displacement compares False: rebuilt
        stale = ~(largest <= 0.5 * self.skin) | (cell != self._cell).flatten(1).any(dim=1)
        return stale.tolist()

    def _search(self, positions: Tensor, cell: Tensor, pbc: Tensor, system: Tensor) -> Edges:
        if self.isolate_nonfinite:
            positions, pbc = isolate_nonfinite(positions, pbc, system, 2.0 * (self.cutoff + self.skin) + 1.0)
        return batched_neighbor_list(positions, cell, pbc, system, self.cutoff + self.skin)

    def _rebuild(self, positions: Tensor, cell: Tensor, pbc: Tensor, system: Tensor, stale: list[bool]) -> None:
        """New lists for the stale systems only, merged with the kept ones in system order, so the list is the one
        a full search would give (sorted by i, j, S) had every kept system stayed at its own last build."""
        device = positions.device
        if self._atom_counts is None:  # atoms per system, read once per batch
            self._atom_counts = torch.bincount(system, minlength=len(stale)).tolist()
        flags = torch.tensor(stale, device=device)
        searched = torch.tensor([b for b, flag in enumerate(stale) if flag], device=device)
        starts = [0, *itertools.accumulate(self._atom_counts)]
        atoms = torch.cat([torch.arange(starts[b], starts[b + 1], device=device)
                           for b, flag in enumerate(stale) if flag])
        renumber = torch.cumsum(flags.long(), 0) - 1  # stale system -> its index among the searched
        found, shifts = self._search(positions[atoms], cell[searched], pbc[searched], renumber[system[atoms]])
        old, old_shifts = self._edges
        keep = (~flags[system[old[0]]]).nonzero().squeeze(1)
        edge_index = torch.cat([old[:, keep], atoms[found]], dim=1)
        shifts = torch.cat([old_shifts[keep], shifts])
        order = torch.argsort(system[edge_index[0]], stable=True)  # systems in turn, each list still sorted
        self._edges = (edge_index[:, order], shifts[order])
        self._reference[atoms] = positions[atoms]
        self._cell[searched] = cell[searched]
        self._count(sum(stale))

    def _count(self, systems: int) -> None:
        self.builds += 1
        self.system_builds += systems


def isolate_nonfinite(positions: Tensor, pbc: Tensor, system: Tensor, spacing: float) -> tuple[Tensor, Tensor]:
    """Positions and pbc with every system that has a NaN/inf coordinate replaced by a non-periodic line of
    atoms ``spacing`` apart (no pairs within a cutoff below it); finite systems are unchanged. No host read."""
    atom_ok = torch.isfinite(positions).all(dim=-1)
    bad = torch.zeros(len(pbc), dtype=torch.int32, device=positions.device).index_add(0, system, (~atom_ok).int())
    finite = bad == 0
    line = torch.zeros_like(positions)
    line[:, 0] = torch.arange(len(positions), dtype=positions.dtype, device=positions.device) * spacing
    return torch.where(finite[system][:, None], positions, line), pbc & finite[:, None]
