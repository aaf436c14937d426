"""Stability of a run: when it breaks and why, tracked atom-pair distances, and sustained events.

Times are in fs. A frame ``t`` is at ``times_fs[t]`` or, by default, ``t * frame_interval_fs``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase.geometry import find_mic

from longmd.analysis._frames import as_frames, frame_cells, pbc3
from longmd.neighbors import neighbor_list


@dataclass(frozen=True)
class StabilityResult:
    """Outcome of :func:`detect_instability`.

    ``time_fs`` is the time of the first unstable frame, or of the last frame when the run is stable.
    ``reason``: ``"stable"``, ``"nan"``, ``"min_distance"`` or ``"temperature"``; ``value`` is the
    offending minimum distance (Å) or temperature (K), None otherwise.
    """

    stable: bool
    time_fs: float
    frame: int | None
    reason: str
    value: float | None = None


def _times(n_frames: int, frame_interval_fs: float, times_fs: np.ndarray | None) -> np.ndarray:
    if times_fs is None:
        return np.arange(n_frames, dtype=np.float64) * float(frame_interval_fs)
    t = np.asarray(times_fs, dtype=np.float64)
    if t.shape != (n_frames,):
        raise ValueError(f"times_fs must have shape ({n_frames},), got {t.shape}")
    return t


def min_distance(positions: np.ndarray, cell: np.ndarray | None, pbc: np.ndarray | bool, r_max: float) -> float:
    """Smallest interatomic distance (Å) of one frame if below ``r_max``, else ``inf``."""
    c = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64)
    pos = np.asarray(positions, dtype=np.float64)
    i, j, S = neighbor_list(pos, c, pbc3(pbc), r_max)
    if len(i) == 0:
        return float("inf")
    return float(np.linalg.norm(pos[j] - pos[i] + S @ c, axis=1).min())


def detect_instability(
    positions: np.ndarray,
    cell: np.ndarray | None = None,
    pbc: np.ndarray | bool = False,
    frame_interval_fs: float = 1.0,
    min_distance_threshold: float = 0.5,
    temperatures: np.ndarray | None = None,
    max_temperature: float | None = None,
    times_fs: np.ndarray | None = None,
) -> StabilityResult:
    """First frame where the run is unphysical, checked frame by frame in this order:

    NaN/inf in positions (or temperature) -> ``"nan"``; any interatomic distance (periodic images
    included) < ``min_distance_threshold`` Å -> ``"min_distance"``; temperature (K, shape (T,)) >
    ``max_temperature`` -> ``"temperature"``.
    """
    pos = as_frames(positions)
    cells, pbc_arr = frame_cells(cell, len(pos)), pbc3(pbc)
    times = _times(len(pos), frame_interval_fs, times_fs)
    temps = None if temperatures is None else np.asarray(temperatures, dtype=np.float64)
    if temps is not None and temps.shape != (len(pos),):
        raise ValueError(f"temperatures must have shape ({len(pos)},), got {temps.shape}")
    for t, (frame, c) in enumerate(zip(pos, cells, strict=True)):
        if not np.all(np.isfinite(frame)) or (temps is not None and not np.isfinite(temps[t])):
            return StabilityResult(False, float(times[t]), t, "nan")
        d = min_distance(frame, c, pbc_arr, min_distance_threshold)
        if d < min_distance_threshold:
            return StabilityResult(False, float(times[t]), t, "min_distance", d)
        if temps is not None and max_temperature is not None and temps[t] > max_temperature:
            return StabilityResult(False, float(times[t]), t, "temperature", float(temps[t]))
    return StabilityResult(True, float(times[-1]), None, "stable")


def tracked_distances(
    positions: np.ndarray,
    pairs: np.ndarray | list[tuple[int, int]],
    cell: np.ndarray | None = None,
    pbc: np.ndarray | bool = False,
) -> np.ndarray:
    """Distances (Å) of chosen atom pairs over time, minimum-image in periodic directions: (T, P)."""
    pos = as_frames(positions)
    idx = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    cells, pbc_arr = frame_cells(cell, len(pos)), pbc3(pbc)
    vec = pos[:, idx[:, 1]] - pos[:, idx[:, 0]]  # (T, P, 3)
    if not pbc_arr.any():
        return np.linalg.norm(vec, axis=-1)
    out = np.empty(vec.shape[:2])
    for t in range(len(pos)):
        out[t] = find_mic(vec[t], cells[t], pbc_arr)[1]
    return out


@dataclass(frozen=True)
class Event:
    """A maximal run of frames [start_frame, end_frame] (inclusive) meeting a condition.

    ``duration_fs`` = time(end_frame) - time(start_frame); ``ongoing``: the run reaches the last frame.
    """

    start_frame: int
    end_frame: int
    duration_fs: float
    ongoing: bool


def find_events(
    values: np.ndarray,
    threshold: float,
    min_duration_fs: float = 0.0,
    frame_interval_fs: float = 1.0,
    above: bool = True,
    times_fs: np.ndarray | None = None,
) -> list[Event]:
    """Runs of consecutive frames with value > threshold (or < if ``above=False``) lasting >= min_duration_fs.

    E.g. H2 dissociation: ``find_events(tracked_distances(pos, [(h1, h2)])[:, 0], 1.5, 50.0, dt)``.
    NaN values never meet the condition.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"values must be 1-D (T,), got {v.shape}")
    times = _times(len(v), frame_interval_fs, times_fs)
    with np.errstate(invalid="ignore"):
        hit = v > threshold if above else v < threshold
    padded = np.concatenate([[False], hit, [False]]).astype(np.int8)
    starts = np.flatnonzero(np.diff(padded) == 1)
    ends = np.flatnonzero(np.diff(padded) == -1) - 1
    events = []
    for s, e in zip(starts, ends, strict=True):
        duration = float(times[e] - times[s])
        if duration >= min_duration_fs:
            events.append(Event(int(s), int(e), duration, bool(e == len(v) - 1)))
    return events


def count_events(
    values: np.ndarray,
    threshold: float,
    min_duration_fs: float = 0.0,
    frame_interval_fs: float = 1.0,
    above: bool = True,
    times_fs: np.ndarray | None = None,
) -> int:
    """Number of events found by :func:`find_events`."""
    return len(find_events(values, threshold, min_duration_fs, frame_interval_fs, above, times_fs))
