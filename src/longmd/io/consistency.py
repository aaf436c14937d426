"""Do consecutive frames agree with their velocities and timestep? Catches dropped frames and wrong timesteps.

``x(t+dt) - x(t)`` must match ``dt (v(t) + v(t+dt)) / 2`` (trapezoid rule, error O(dt^3)) on the unwrapped
path; the mismatch is the RMS over atoms of the difference relative to the RMS of ``dt (v(t) + v(t+dt)) / 2``.
"""

from __future__ import annotations

import numpy as np

from longmd.data.trajectory import unwrap_positions
from longmd.units import fs_to_ase_time

#: Largest mismatch accepted. The embedded example reaches 0.03 at its 0.5 fs and 0.22 subsampled to 2 fs; a
#: dropped frame gives ~1, a timestep off by a factor of 2 gives 0.5 (too long) or 1 (too short).
CONSISTENCY_TOLERANCE = 0.35


def frame_mismatch(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, velocities: np.ndarray, timestep_fs: float
) -> np.ndarray:
    """(T-1,) mismatch of each pair of consecutive frames (positions Å, velocities Å/ASE-time; the scale is at
    least 1e-6 Å so frames at rest compare their displacement with zero)."""
    x = unwrap_positions(positions, cell, pbc)
    mid = fs_to_ase_time(timestep_fs) * (velocities[1:] + velocities[:-1]) / 2
    residual = np.diff(x, axis=0) - mid
    scale = np.maximum(np.sqrt((mid**2).mean((1, 2))), 1e-6)
    return np.sqrt((residual**2).mean((1, 2))) / scale


def first_inconsistent(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, velocities: np.ndarray, timestep_fs: float
) -> tuple[int, float] | None:
    """``(k, mismatch)`` of the first frame k that frame k - 1 does not reach, or None when all agree."""
    if len(positions) < 2:
        return None
    mismatch = frame_mismatch(positions, cell, pbc, velocities, timestep_fs)
    bad = np.flatnonzero(mismatch > CONSISTENCY_TOLERANCE)
    return (int(bad[0]) + 1, float(mismatch[bad[0]])) if bad.size else None
