"""Where the neighbour list of each MD step comes from.

- :class:`GivenNeighbors`: lists computed beforehand (DT training takes them from the reference
  trajectory: a neighbour search is a step function, not differentiable), reused for k steps.
- :class:`VerletNeighbors`: a list with cutoff + skin, rebuilt only when some atom has moved more than
  skin / 2 since the last build (simulation, validation rollouts).
- :class:`RebuildNeighbors`: a fresh list every step (the reference that Verlet lists are tested against).
"""

from __future__ import annotations

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
    """Verlet list: radius cutoff + skin, rebuilt when any atom moved more than skin / 2 since the last build.

    Pairs that come within the cutoff between rebuilds were within cutoff + skin at the build, so results
    equal a fresh list every step (the model ignores pairs beyond its cutoff). Call :meth:`reset` when
    the atoms of the batch change (e.g. a replica is removed).

    A step reads one pair of numbers from the device (largest displacement, cell changed). With
    ``isolate_nonfinite`` a system with a NaN/inf coordinate is searched as a non-periodic line of far-apart
    atoms (no pairs), so the search cannot fail and the other systems are untouched; this costs no extra read
    (a non-finite displacement always triggers a build). Without it such positions make the search raise.
    """

    def __init__(self, cutoff: float, skin: float = 1.0, isolate_nonfinite: bool = False) -> None:
        if skin < 0:
            raise ValueError(f"skin must be >= 0, got {skin}")
        self.cutoff, self.skin = float(cutoff), float(skin)
        self.isolate_nonfinite = isolate_nonfinite
        self.builds = 0
        self._reference: Tensor | None = None
        self._cell: Tensor | None = None
        self._edges: Edges | None = None

    def reset(self) -> None:
        self._reference, self._cell, self._edges = None, None, None

    def state_dict(self) -> dict | None:
        """Positions and cells of the last build (None before one), for checkpoints."""
        if self._reference is None:
            return None
        return {"positions": self._reference.cpu(), "cell": self._cell.cpu()}

    def load_state_dict(self, saved: dict | None, state: MDState) -> None:
        """Rebuild the list from the positions of a saved build (the same pairs in the same order as before the
        checkpoint); ``state`` gives the batch's pbc and systems."""
        self.reset()
        if saved is None or saved["positions"].shape != state.positions.shape:
            return
        build = state.replace(positions=saved["positions"].to(state.positions), cell=saved["cell"].to(state.cell))
        self.edges(0, build)
        self.builds -= 1  # a rebuild of a list the run already counted

    @property
    def current(self) -> Edges | None:
        """The list in use (cutoff + skin), or None before the first build."""
        return self._edges

    def edges(self, step: int, state: MDState) -> Edges:
        positions, cell = state.positions.detach(), state.cell.detach()
        if (
            self._reference is not None
            and self._reference.shape == positions.shape
            and self._cell.shape == cell.shape
        ):
            moved = (positions - self._reference).norm(dim=-1).max()
            cell_changed = (cell != self._cell).any().to(moved.dtype)
            moved, cell_changed = torch.stack([moved, cell_changed]).tolist()  # the one read of a step
            if not cell_changed and moved <= 0.5 * self.skin:  # a NaN displacement compares False: rebuild
                return self._edges
        pbc = state.pbc
        if self.isolate_nonfinite:
            positions, pbc = isolate_nonfinite(positions, pbc, state.system, 2.0 * (self.cutoff + self.skin) + 1.0)
        self._edges = batched_neighbor_list(positions, cell, pbc, state.system, self.cutoff + self.skin)
        self._reference = positions.clone()
        self._cell = cell.clone()
        self.builds += 1
        return self._edges


def isolate_nonfinite(positions: Tensor, pbc: Tensor, system: Tensor, spacing: float) -> tuple[Tensor, Tensor]:
    """Positions and pbc with every system that has a NaN/inf coordinate replaced by a non-periodic line of
    atoms ``spacing`` apart (no pairs within a cutoff below it); finite systems are unchanged. No host read."""
    atom_ok = torch.isfinite(positions).all(dim=-1)
    bad = torch.zeros(len(pbc), dtype=torch.int32, device=positions.device).index_add(0, system, (~atom_ok).int())
    finite = bad == 0
    line = torch.zeros_like(positions)
    line[:, 0] = torch.arange(len(positions), dtype=positions.dtype, device=positions.device) * spacing
    return torch.where(finite[system][:, None], positions, line), pbc & finite[:, None]
