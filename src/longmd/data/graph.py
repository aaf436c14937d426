"""The batched atomic graph every model consumes.

Many systems are concatenated into one set of atoms; ``system`` says which system each atom belongs to.
Edges form a *full* neighbour list (both i->j and j->i). The vector of edge (i, j) is

    r_ij = x_j - x_i + shifts_ij @ cell[system[i]]

so positions stay differentiable and periodic images never need to be materialised.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor


@dataclass
class Graph:
    """A batch of atomic systems with a neighbour list.

    Attributes:
        positions: (N, 3) Cartesian positions, Å.
        numbers: (N,) atomic numbers (long).
        cell: (B, 3, 3) cells, rows are lattice vectors (ASE convention), Å. Zeros for non-periodic.
        system: (N,) index of the system each atom belongs to (long, sorted ascending).
        edge_index: (2, E) long; row 0 = centre atom i, row 1 = neighbour j.
        shifts: (E, 3) integer cell shifts as floats (same dtype as positions).
    """

    positions: Tensor
    numbers: Tensor
    cell: Tensor
    system: Tensor
    edge_index: Tensor
    shifts: Tensor

    @property
    def n_systems(self) -> int:
        return int(self.cell.shape[0])

    @property
    def n_atoms(self) -> int:
        return int(self.positions.shape[0])

    def edge_vectors(self) -> Tensor:
        """(E, 3) vectors r_ij = x_j - x_i + S_ij @ cell, differentiable w.r.t. positions and cell."""
        return edge_vectors(self.positions, self.cell, self.system, self.edge_index, self.shifts)

    def within(self, cutoff: float) -> Graph:
        """The batch with only the edges shorter than ``cutoff``.

        Verlet lists carry a skin (~1.7x more pairs for 1 Å at 5 Å); a model whose edges beyond its cutoff
        contribute exactly zero calls this first so those pairs cost nothing. The choice of edges is a step
        function, made without autograd; gradients flow through the kept edges as before. The number of kept
        edges is the one read from the device (a GPU waits for it); the batch itself is returned when all are kept.
        """
        with torch.no_grad():
            vectors = self.edge_vectors()
            index = torch.nonzero((vectors * vectors).sum(dim=1) < cutoff * cutoff).squeeze(1)
        if len(index) == self.edge_index.shape[1]:
            return self
        return self.replace(edge_index=self.edge_index[:, index], shifts=self.shifts[index])

    def triplet_edges(self) -> tuple[Tensor, Tensor]:
        """Angle triplets as edge pairs ``(e_ij, e_ik)``: every ordered pair of distinct edges with the same
        centre i, for 3-body terms (the vectors are ``edge_vectors()[e_ij]``, ``[e_ik]``, images included).

        Vectorised; the number of triplets, sum_i c_i (c_i - 1) over the edge counts c_i, is the one value
        read from the device. Ordered by centre, then e_ij, then e_ik (edge order within a centre).
        """
        centre = self.edge_index[0]
        order = torch.argsort(centre, stable=True)  # edges grouped by centre
        counts = torch.bincount(centre, minlength=self.n_atoms)
        group_start = (torch.cumsum(counts, 0) - counts)[centre[order]]  # of each sorted edge's centre group
        partners = (counts - 1).clamp(min=0)[centre[order]]  # triplets with each sorted edge as e_ij
        n = int(partners.sum())  # the host read
        ij = torch.repeat_interleave(torch.arange(len(order), device=centre.device), partners, output_size=n)
        local = torch.arange(n, device=centre.device) - (torch.cumsum(partners, 0) - partners)[ij]
        rank = ij - group_start[ij]  # e_ij's place in its group; e_ik runs over the others
        ik = group_start[ij] + local + (local >= rank).long()
        return order[ij], order[ik]

    def triplets(self) -> tuple[Tensor, Tensor, Tensor]:
        """Angle triplets as atom indices ``(j, i, k)``: centre i, neighbours j and k through distinct edges
        (see :meth:`triplet_edges`, whose edge pairs also give the periodic images)."""
        e_ij, e_ik = self.triplet_edges()
        return self.edge_index[1, e_ij], self.edge_index[0, e_ij], self.edge_index[1, e_ik]

    def replace(self, **changes: Tensor) -> Graph:
        """A copy with some fields replaced (e.g. new positions during a rollout)."""
        return replace(self, **changes)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Graph:
        """Move to a device; floating fields are cast to ``dtype`` when given."""
        return Graph(**{f.name: move_tensor(getattr(self, f.name), device, dtype) for f in fields(self)})


def move_tensor(t: Tensor, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Tensor:
    """``t`` on ``device``; cast to ``dtype`` only if it is floating point (indices stay integers)."""
    if dtype is not None and t.is_floating_point():
        t = t.to(dtype)
    return t.to(device) if device is not None else t


def edge_vectors(positions: Tensor, cell: Tensor, system: Tensor, edge_index: Tensor, shifts: Tensor) -> Tensor:
    """Edge vectors r_ij = x_j - x_i + shifts @ cell[system[i]] (differentiable, double-backward safe)."""
    i, j = edge_index[0], edge_index[1]
    offsets = torch.einsum("ek,ekl->el", shifts.to(positions.dtype), cell[system[i]])
    return positions.index_select(0, j) - positions.index_select(0, i) + offsets


def safe_norm(vectors: Tensor) -> Tensor:
    """|v| of (M, 3) vectors, with a finite gradient at v = 0 (coincident atoms, where sqrt's is NaN): 0 there."""
    d2 = (vectors * vectors).sum(dim=1)
    positive = d2 > 0
    return torch.sqrt(torch.where(positive, d2, torch.ones_like(d2))) * positive
