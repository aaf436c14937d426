"""Radius graphs with periodic boundary conditions.

vesin-torch computes the pair indices i, j and integer cell shifts S on the device the positions live on
(CPU or CUDA), so GPU rollouts never copy positions to the host for a neighbour search. Distances are
always recomputed in torch from (i, j, S) via :func:`longmd.data.graph.edge_vectors`, so first *and second*
derivatives (forces trained through rollouts) are exact; vesin's own distance output is never used.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from vesin_torch import NeighborList


def system_neighbor_list(positions: Tensor, cell: Tensor, pbc: Tensor, cutoff: float) -> tuple[Tensor, Tensor, Tensor]:
    """Full neighbour list of one system, on the device of ``positions``.

    Returns i, j (int64, (E,)) and integer shifts S (int64, (E, 3)) with r_ij = r_j - r_i + S @ cell.
    Includes periodic self-images (i == j with S != 0) when a cell is smaller than the cutoff. Pairs are
    sorted by i, j, then S, so lists are reproducible on every device.
    """
    positions = positions.detach().to(torch.float64)
    cell = cell.detach().to(device=positions.device, dtype=torch.float64)
    pbc = torch.as_tensor(pbc, dtype=torch.bool).broadcast_to((3,)).to(positions.device)
    if not bool(torch.isfinite(positions).all()):
        raise ValueError("neighbor_list: positions contain NaN or inf")
    if bool((torch.linalg.vector_norm(cell, dim=1)[pbc] < 1e-12).any()):
        raise ValueError("neighbor_list: a periodic direction has a zero cell vector")
    if len(positions) < (1 if bool(pbc.any()) else 2):  # no pairs possible (vesin-torch 0.6 divides by zero)
        empty = torch.zeros(0, dtype=torch.long, device=positions.device)
        return empty, empty.clone(), torch.zeros(0, 3, dtype=torch.long, device=positions.device)
    i, j, S = NeighborList(cutoff=float(cutoff), full_list=True).compute(positions, cell, pbc, "ijS")
    i, j, S = i.long(), j.long(), S.long()
    if len(i) == 0:
        return i, j, S
    # One sort on a composite key (i, j, S0, S1, S2): shifts offset to be non-negative, each in base `width`.
    width = int(S.abs().max()) * 2 + 1
    key = i * len(positions) + j
    for column in range(3):
        key = key * width + S[:, column] + width // 2
    order = torch.argsort(key)
    return i[order], j[order], S[order]


def neighbor_list(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray | bool, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NumPy form of :func:`system_neighbor_list` (CPU): i, j (int64) and S (int64, (E, 3))."""
    i, j, S = system_neighbor_list(
        torch.as_tensor(np.asarray(positions, dtype=np.float64)),
        torch.as_tensor(np.asarray(cell, dtype=np.float64)),
        torch.as_tensor(np.asarray(pbc, dtype=bool)),
        cutoff,
    )
    return i.numpy(), j.numpy(), S.numpy()


def batched_neighbor_list(
    positions: Tensor, cell: Tensor, pbc: Tensor, system: Tensor, cutoff: float
) -> tuple[Tensor, Tensor]:
    """Neighbour list of a batch of systems, built on the device of ``positions``.

    Args:
        positions: (N, 3) Å. cell: (B, 3, 3). pbc: (B, 3) bool. system: (N,) sorted system index.
        cutoff: radius, Å.

    Returns:
        edge_index (2, E) long and shifts (E, 3) in ``positions.dtype``, on ``positions.device``.
    """
    counts = torch.bincount(system, minlength=cell.shape[0]).tolist()
    edges, shifts, start = [], [], 0
    for b, count in enumerate(counts):
        i, j, S = system_neighbor_list(positions[start : start + count], cell[b], pbc[b], cutoff)
        edges.append(torch.stack([i + start, j + start]))
        shifts.append(S)
        start += count
    if not edges:
        return (torch.zeros(2, 0, dtype=torch.long, device=positions.device),
                torch.zeros(0, 3, dtype=positions.dtype, device=positions.device))
    return torch.cat(edges, dim=1), torch.cat(shifts).to(positions.dtype)
