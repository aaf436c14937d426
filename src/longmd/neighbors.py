"""Radius graphs with periodic boundary conditions.

vesin computes the pair indices i, j and integer cell shifts S on the CPU (or from CPU copies); distances are
always recomputed in torch from (i, j, S) via :func:`longmd.data.graph.edge_vectors`, so first *and second*
derivatives (forces trained through rollouts) are exact.
"""

from __future__ import annotations

import numpy as np
import torch
import vesin
from torch import Tensor


def neighbor_list(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray | bool, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full neighbour list of one system: indices i, j (int64) and integer shifts S (int64, (E, 3)).

    Includes periodic self-images (i == j with S != 0) when a cell is smaller than the cutoff. Pairs are
    sorted by i then j so lists are reproducible.
    """
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    cell = np.ascontiguousarray(cell, dtype=np.float64)
    pbc_arr = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    if not np.all(np.isfinite(positions)):
        raise ValueError("neighbor_list: positions contain NaN or inf")
    if np.any(np.linalg.norm(cell[pbc_arr], axis=1) < 1e-12):
        raise ValueError("neighbor_list: a periodic direction has a zero cell vector")
    calculator = vesin.NeighborList(cutoff=float(cutoff), full_list=True)
    i, j, S = calculator.compute(positions, cell, [bool(p) for p in pbc_arr], "ijS")
    i, j, S = i.astype(np.int64), j.astype(np.int64), S.astype(np.int64)
    order = np.lexsort((S[:, 2], S[:, 1], S[:, 0], j, i))
    return i[order], j[order], S[order]


def batched_neighbor_list(
    positions: Tensor, cell: Tensor, pbc: Tensor, system: Tensor, cutoff: float
) -> tuple[Tensor, Tensor]:
    """Neighbour list of a batch of systems.

    Args:
        positions: (N, 3) Å. cell: (B, 3, 3). pbc: (B, 3) bool. system: (N,) sorted system index.
        cutoff: radius, Å.

    Returns:
        edge_index (2, E) long and shifts (E, 3) in ``positions.dtype``, on ``positions.device``.
    """
    pos = positions.detach().cpu().double().numpy()
    cells = cell.detach().cpu().double().numpy()
    pbcs = pbc.detach().cpu().numpy().astype(bool)
    counts = torch.bincount(system.cpu(), minlength=cells.shape[0]).numpy()
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    edges, shifts = [], []
    for b, (start, count) in enumerate(zip(starts, counts)):
        i, j, S = neighbor_list(pos[start : start + count], cells[b], pbcs[b], cutoff)
        edges.append(np.stack([i + start, j + start]))
        shifts.append(S)
    edge_index = torch.from_numpy(np.concatenate(edges, axis=1)) if edges else torch.zeros(2, 0, dtype=torch.long)
    shift = torch.from_numpy(np.concatenate(shifts)) if shifts else torch.zeros(0, 3, dtype=torch.long)
    return edge_index.to(positions.device), shift.to(device=positions.device, dtype=positions.dtype)
