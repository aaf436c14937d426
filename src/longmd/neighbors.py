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
    pbc = torch.as_tensor(pbc, dtype=torch.bool).broadcast_to((3,))
    system = torch.zeros(len(positions), dtype=torch.long, device=positions.device)
    return _pairs(positions, torch.as_tensor(cell)[None], pbc[None], system, cutoff)


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
        edge_index (2, E) long and shifts (E, 3) in ``positions.dtype``, on ``positions.device``, sorted by
        (i, j, S) as :func:`system_neighbor_list`.
    """
    i, j, S = _pairs(positions, cell, pbc, system, cutoff)
    return torch.stack([i, j]), S.to(positions.dtype)


def _pairs(
    positions: Tensor, cell: Tensor, pbc: Tensor, system: Tensor, cutoff: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Sorted i, j, S (int64) of a batch (indices into the batch's atoms).

    Host reads: one before the search (atoms per system and the input checks of every system), vesin's own,
    and one after it (the width of the sort key).
    """
    device = positions.device
    positions = positions.detach().to(torch.float64)
    cell = cell.detach().to(device=device, dtype=torch.float64)
    pbc = pbc.to(device=device, dtype=torch.bool)
    n_systems = cell.shape[0]
    ones = torch.ones(len(system), dtype=torch.long, device=device)
    counts = torch.zeros(n_systems, dtype=torch.long, device=device).index_add(0, system, ones)
    zero_vector = ((torch.linalg.vector_norm(cell, dim=2) < 1e-12) & pbc).any(dim=1)
    finite = torch.isfinite(positions).all()[None].long()
    host = torch.cat([counts, pbc.any(dim=1).long(), zero_vector.long(), finite]).tolist()  # the read before the search
    counts, periodic, zero_vector, finite = (host[:n_systems], host[n_systems : 2 * n_systems],
                                             host[2 * n_systems : 3 * n_systems], host[-1])
    if not finite:
        raise ValueError("neighbor_list: positions contain NaN or inf")
    if any(zero_vector):
        raise ValueError("neighbor_list: a periodic direction has a zero cell vector")
    found, start = [], 0
    for b, count in enumerate(counts):
        if count >= (1 if periodic[b] else 2):  # else no pairs possible (vesin-torch 0.6 divides by zero)
            i, j, S = NeighborList(cutoff=float(cutoff), full_list=True).compute(
                positions[start : start + count], cell[b], pbc[b], "ijS")
            found.append((i.long() + start, j.long() + start, S.long()))
        start += count
    if not found:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty.clone(), torch.zeros(0, 3, dtype=torch.long, device=device)
    i, j, S = (torch.cat(parts) for parts in zip(*found, strict=True))
    if len(i) == 0:
        return i, j, S
    # Sort by (i, j, S): a stable sort on the shifts (offset to be non-negative, each in base `width`), then one
    # on the pair. Indices are the batch's, so this gives every system's sorted list in turn.
    width = int(S.abs().max()) * 2 + 1  # the one read after the search
    shift_key = torch.zeros_like(i)
    for column in range(3):
        shift_key = shift_key * width + S[:, column] + width // 2
    order = torch.argsort(shift_key, stable=True)
    order = order[torch.argsort((i * len(positions) + j)[order], stable=True)]
    return i[order], j[order], S[order]
