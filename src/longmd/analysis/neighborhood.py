"""Neighbourhood smoothness: Jaccard similarity of neighbour sets at time offsets k = 1..K.

Atom i's neighbour set N_i(t) is the set of atom indices j != i with a periodic image within ``cutoff``
(the image is ignored, so wrapping atoms back into the cell changes nothing). For an offset k,

    J_i(k) = mean over origins t of |N_i(t) & N_i(t+k)| / |N_i(t) | N_i(t+k)|   (1 when both are empty).

The largest k whose similarity stays above a level tells how many MD steps a neighbour list can be reused
(``neighbor_update_every``) when frames are consecutive steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from longmd.analysis._frames import as_frames, frame_cells, pbc3
from longmd.neighbors import neighbor_list


@dataclass(frozen=True)
class JaccardProfile:
    """Jaccard similarities: ``per_atom`` (K, N), ``per_species`` (K, n_species) and ``mean`` (K,) at ``ks``."""

    ks: np.ndarray
    per_atom: np.ndarray
    species: list[int]
    per_species: np.ndarray
    mean: np.ndarray


def _neighbor_keys(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float) -> np.ndarray:
    """Sorted unique keys i * N + j of the (i, j != i) neighbour pairs of one frame."""
    i, j, _ = neighbor_list(positions, cell, pbc, cutoff)
    keep = i != j
    return np.unique(i[keep] * len(positions) + j[keep])


def jaccard_profile(
    positions: np.ndarray,
    cell: np.ndarray | None,
    pbc: np.ndarray | bool,
    cutoff: float,
    max_offset: int,
    numbers: np.ndarray | None = None,
    origin_stride: int = 1,
) -> JaccardProfile:
    """Jaccard similarity of every atom's neighbour set between frames t and t+k, k = 1..max_offset.

    Args:
        positions: (T, N, 3) Å, consecutive frames. cell: (3, 3), (T, 3, 3) or None. pbc: bool or (3,).
        cutoff: neighbour radius, Å. max_offset: K (at most T - 1).
        numbers: (N,) atomic numbers for the per-species averages (default: one species 0).
        origin_stride: use every ``origin_stride``-th frame as an origin t.
    """
    pos = as_frames(positions)
    n_frames, n_atoms = pos.shape[:2]
    if not 1 <= max_offset < n_frames:
        raise ValueError(f"max_offset must be in [1, {n_frames - 1}], got {max_offset}")
    cells, pbc_arr = frame_cells(cell, n_frames), pbc3(pbc)
    keys = [_neighbor_keys(p, c, pbc_arr, cutoff) for p, c in zip(pos, cells, strict=True)]
    degree = [np.bincount(k // n_atoms, minlength=n_atoms) for k in keys]
    per_atom = np.zeros((max_offset, n_atoms))
    for k in range(1, max_offset + 1):
        origins = range(0, n_frames - k, origin_stride)
        for t in origins:
            common = np.intersect1d(keys[t], keys[t + k], assume_unique=True)
            inter = np.bincount(common // n_atoms, minlength=n_atoms)
            union = degree[t] + degree[t + k] - inter
            per_atom[k - 1] += np.where(union > 0, inter / np.maximum(union, 1), 1.0)
        per_atom[k - 1] /= len(origins)
    nums = np.zeros(n_atoms, dtype=np.int64) if numbers is None else np.asarray(numbers, dtype=np.int64)
    species = sorted(set(nums.tolist()))
    per_species = np.stack([per_atom[:, nums == z].mean(1) for z in species], axis=1)
    return JaccardProfile(np.arange(1, max_offset + 1), per_atom, species, per_species, per_atom.mean(1))


def max_reuse_offset(
    profile: JaccardProfile | np.ndarray,
    level: float = 0.95,
    by: Literal["min_species", "mean", "min_atom"] = "min_species",
) -> int:
    """Largest k such that the similarity stays >= ``level`` for every offset 1..k (0 if already k = 1 fails).

    For a profile, ``by`` picks the curve: the worst species' average (default), the all-atom mean, or
    the worst single atom. A 1-D array is taken as the curve itself (its entry 0 is k = 1).
    """
    if isinstance(profile, JaccardProfile):
        curves = {
            "min_species": profile.per_species.min(1),
            "mean": profile.mean,
            "min_atom": profile.per_atom.min(1),
        }
        curve = curves[by]
    else:
        curve = np.asarray(profile, dtype=np.float64)
    below = np.flatnonzero(curve < level)
    return int(below[0]) if len(below) else len(curve)
