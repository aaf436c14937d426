"""NVE energy drift and simulation speed."""

from __future__ import annotations

import numpy as np

FS_PER_PS = 1000.0
SECONDS_PER_DAY = 86400.0


def energy_drift(times_fs: np.ndarray, total_energy_eV: np.ndarray, n_atoms: int) -> float:
    """NVE energy drift in meV/atom/ps: slope of a least-squares line through E_tot(t), per atom.

    Signed (positive = heating). ``times_fs`` (T,), ``total_energy_eV`` (T,) of one system.
    """
    t = np.asarray(times_fs, dtype=np.float64)
    e = np.asarray(total_energy_eV, dtype=np.float64)
    if t.shape != e.shape or t.ndim != 1 or len(t) < 2:
        raise ValueError("need matching 1-D times and energies with at least 2 points")
    slope_eV_per_fs = np.polyfit(t, e, 1)[0]
    return float(slope_eV_per_fs * 1000.0 * FS_PER_PS / n_atoms)


def max_energy_deviation(total_energy_eV: np.ndarray, n_atoms: int) -> float:
    """Largest |E_tot(t) - E_tot(0)| in meV/atom (catches non-linear excursions that a drift hides)."""
    e = np.asarray(total_energy_eV, dtype=np.float64)
    return float(np.max(np.abs(e - e[0])) * 1000.0 / n_atoms)


def steps_per_second(n_steps: int, wall_seconds: float) -> float:
    """MD steps per wall-clock second."""
    return n_steps / wall_seconds


def ns_per_day(steps_per_s: float, timestep_fs: float) -> float:
    """Simulated ns per wall-clock day: steps/s * timestep (fs) * 86400 s/day * 1e-6 ns/fs."""
    return steps_per_s * timestep_fs * SECONDS_PER_DAY * 1e-6
