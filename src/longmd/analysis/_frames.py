"""Shared helpers: frame arrays, cells and pair distances from the vesin neighbour list."""

from __future__ import annotations

import numpy as np

from longmd.neighbors import neighbor_list


def as_frames(positions: np.ndarray) -> np.ndarray:
    """Positions as (T, N, 3) float64 (a single (N, 3) frame becomes T = 1)."""
    pos = np.asarray(positions, dtype=np.float64)
    if pos.ndim == 2:
        pos = pos[None]
    if pos.ndim != 3 or pos.shape[-1] != 3:
        raise ValueError(f"positions must have shape (N, 3) or (T, N, 3), got {pos.shape}")
    return pos


def frame_cells(cell: np.ndarray | None, n_frames: int) -> np.ndarray:
    """Cells as (T, 3, 3): ``None`` means zeros (non-periodic), (3, 3) is repeated, (T, 3, 3) is kept."""
    if cell is None:
        return np.zeros((n_frames, 3, 3))
    c = np.asarray(cell, dtype=np.float64)
    if c.shape == (3, 3):
        return np.repeat(c[None], n_frames, axis=0)  # writable (torch warns on read-only views)
    if c.shape == (n_frames, 3, 3):
        return c
    raise ValueError(f"cell must have shape (3, 3) or ({n_frames}, 3, 3), got {c.shape}")


def pbc3(pbc: np.ndarray | bool | None) -> np.ndarray:
    """Periodicity flags as a (3,) bool array."""
    return np.broadcast_to(np.asarray(False if pbc is None else pbc, dtype=bool), (3,)).copy()


def pair_distances(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, r_max: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full list (both i->j and j->i) of pairs with 0 < d <= r_max, including periodic images.

    Returns i, j and distances d (Å) of one frame.
    """
    i, j, S = neighbor_list(positions, cell, pbc, r_max * (1.0 + 1e-9) + 1e-12)
    d = np.linalg.norm(positions[j] - positions[i] + S @ cell, axis=1)
    keep = (d <= r_max) & (d > 0.0)
    return i[keep], j[keep], d[keep]
