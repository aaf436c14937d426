"""Collate B windows of equal length S into one batch of B systems (atoms concatenated).

Positions inside a window are unwrapped (continuous from the window's first frame, as an integrator
would produce them), and the reference neighbour lists' cell shifts are corrected to match, so
``graph(s).edge_vectors()`` equals the reference frame's true pair vectors. Conventional training uses
windows of length 1 through the same path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch
from ase.cell import Cell
from torch import Tensor

from longmd.data.graph import Graph, move_tensor
from longmd.data.reference_neighbors import ReferenceNeighbors
from longmd.data.trajectory import Trajectory, unwrap_positions
from longmd.data.windows import Window

CELL_ATOL = 1e-9  # Å; cells inside one window must agree to this


@dataclass
class WindowBatch:
    """B windows of S steps as one batch of systems.

    Attributes:
        numbers: (N,) long. masses: (N,) amu. cell: (B, 3, 3) Å. pbc: (B, 3) bool. system: (N,) long.
        positions: (S, N, 3) Å, unwrapped within each window. velocities: (S, N, 3) Å/ASE-time.
        forces: (S, N, 3) eV/Å. energy: (S, B) eV.
        edges: per step s, (edge_index (2, E) long, shifts (E, 3) float) of reference frame start + s,
            atom indices offset per system, shifts consistent with ``positions[s]``.
        windows: the windows, in system order.
    """

    numbers: Tensor
    masses: Tensor
    cell: Tensor
    pbc: Tensor
    system: Tensor
    positions: Tensor
    velocities: Tensor
    forces: Tensor
    energy: Tensor
    edges: list[tuple[Tensor, Tensor]]
    windows: tuple[Window, ...] = ()

    @property
    def n_steps(self) -> int:
        return int(self.positions.shape[0])

    @property
    def n_systems(self) -> int:
        return int(self.cell.shape[0])

    @property
    def n_atoms(self) -> int:
        return int(self.numbers.shape[0])

    def graph(self, s: int, positions: Tensor | None = None) -> Graph:
        """Graph of step ``s`` with its reference edges, at the reference positions unless given."""
        edge_index, shifts = self.edges[s]
        return Graph(
            positions=self.positions[s] if positions is None else positions,
            numbers=self.numbers,
            cell=self.cell,
            system=self.system,
            edge_index=edge_index,
            shifts=shifts,
        )

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> WindowBatch:
        """Move to a device; floating tensors are cast to ``dtype`` when given."""

        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "edges":
                value = [(move_tensor(e, device, dtype), move_tensor(s, device, dtype)) for e, s in value]
            elif isinstance(value, Tensor):
                value = move_tensor(value, device, dtype)
            out[f.name] = value
        return WindowBatch(**out)


def collate_windows(
    trajectories: Sequence[Trajectory],
    windows: Sequence[Window],
    neighbors: ReferenceNeighbors,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
) -> WindowBatch:
    """Batch windows of equal length; each window's cell must be constant over its frames."""
    if not windows:
        raise ValueError("collate_windows needs at least one window")
    steps = windows[0].length
    if any(w.length != steps for w in windows):
        raise ValueError(f"windows must have equal length, got {sorted({w.length for w in windows})}")
    numbers, masses, cells, pbcs, system = [], [], [], [], []
    positions, velocities, forces, energy = [], [], [], []
    edges: list[list[np.ndarray]] = [[] for _ in range(steps)]
    shifts: list[list[np.ndarray]] = [[] for _ in range(steps)]
    offset = 0
    for b, w in enumerate(windows):
        traj = trajectories[w.traj]
        if w.start < 0 or w.stop > len(traj):
            raise IndexError(f"{w} does not fit in trajectory {traj.name!r} of {len(traj)} frames")
        frames = slice(w.start, w.stop)
        cell = traj.cell[w.start]
        if not np.allclose(traj.cell[frames], cell, rtol=0.0, atol=CELL_ATOL):
            raise ValueError(f"{w}: the cell of {traj.name!r} changes inside the window (not supported)")
        wrapped = traj.positions[frames]
        unwrapped = unwrap_positions(wrapped, cell, traj.pbc)
        # integer image of each atom: unwrapped = wrapped + image @ cell
        image = np.rint((unwrapped - wrapped) @ np.linalg.inv(Cell(cell).complete())).astype(np.int64)
        for s in range(steps):
            i, j, S = neighbors.get(w.traj, w.start + s)
            edges[s].append(np.stack([i, j]) + offset)
            shifts[s].append(S - image[s, j] + image[s, i])
        n = traj.n_atoms
        numbers.append(traj.numbers)
        masses.append(traj.masses)
        cells.append(cell)
        pbcs.append(traj.pbc)
        system.append(np.full(n, b, dtype=np.int64))
        positions.append(unwrapped)
        velocities.append(traj.velocities[frames])
        forces.append(traj.forces[frames])
        energy.append(traj.energy[frames])
        offset += n

    def floats(arrays: list[np.ndarray], axis: int = 0) -> Tensor:
        return torch.from_numpy(np.concatenate(arrays, axis=axis)).to(device=device, dtype=dtype)

    def longs(array: np.ndarray) -> Tensor:
        return torch.from_numpy(array).to(device=device, dtype=torch.long)

    return WindowBatch(
        numbers=longs(np.concatenate(numbers)),
        masses=floats(masses),
        cell=torch.from_numpy(np.stack(cells)).to(device=device, dtype=dtype),
        pbc=torch.from_numpy(np.stack(pbcs)).to(device=device),
        system=longs(np.concatenate(system)),
        positions=floats(positions, axis=1),
        velocities=floats(velocities, axis=1),
        forces=floats(forces, axis=1),
        energy=torch.from_numpy(np.stack(energy, axis=1)).to(device=device, dtype=dtype),
        edges=[(longs(np.concatenate(edges[s], axis=1)), floats(shifts[s])) for s in range(steps)],
        windows=tuple(windows),
    )
