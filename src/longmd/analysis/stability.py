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


RDF_MAE_STABLE = 0.02
"""The GraNNField study's line between stable and unstable MD: RDF-MAE (mean over bins of |g_model - g_ref|, g(r)
dimensionless) below 0.02. It depends on the bins and the r range (here the evaluation's ``r_max`` and ``n_bins``)
and on how long the runs are (a short run's g(r) is noisy), so it is reported next to the reference's own noise
floor: the same score between two independent reference runs."""


def first_peak(r: np.ndarray, g: np.ndarray, r_min: float = 0.5) -> float | None:
    """Position (Å) of the first maximum of g(r) that reaches half of the curve's highest value, refined by a
    parabola through its bin and the two neighbours; None for an empty curve."""
    r, g = np.asarray(r, dtype=np.float64), np.asarray(g, dtype=np.float64)
    sel = np.flatnonzero(r >= r_min)
    if len(sel) < 3 or not np.any(g[sel] > 0):
        return None
    top = g[sel].max()
    for k in sel[1:-1]:
        if g[k] >= 0.5 * top and g[k] >= g[k - 1] and g[k] >= g[k + 1]:
            a, b, c = g[k - 1], g[k], g[k + 1]
            denom = a - 2 * b + c
            offset = 0.5 * (a - c) / denom if denom != 0 else 0.0
            return float(r[k] + offset * (r[k + 1] - r[k]))
    return float(r[sel[np.argmax(g[sel])]])


def peak_shifts(r: np.ndarray, partial: dict[str, np.ndarray], partial_ref: dict[str, np.ndarray]) -> dict[str, float]:
    """First-peak shift (Å, model minus reference) of every species pair both have: a nearest-neighbour distance
    the model gets wrong (in a fixed cell, the local face of a lattice mismatch)."""
    out = {}
    for key, g in partial.items():
        if key in partial_ref:
            a, b = first_peak(r, g), first_peak(r, partial_ref[key])
            if a is not None and b is not None:
                out[key] = a - b
    return out


@dataclass(frozen=True)
class VerdictLimits:
    """Where each failure mode starts: RDF-MAE above ``rdf_mae`` (unstable); a closest approach below
    ``fusion_fraction`` of the reference's for the same species pair (atom fusion); a first-peak shift beyond
    ``peak_shift_A`` (lattice mismatch); a framework MSD above ``melting_factor`` x the reference's and above
    ``melting_min_A2`` (framework melting: a crystal's atoms rattle by a fraction of an Å² and stay)."""

    rdf_mae: float = RDF_MAE_STABLE
    fusion_fraction: float = 0.75
    peak_shift_A: float = 0.1
    melting_factor: float = 3.0
    melting_min_A2: float = 1.0


def stability_verdict(
    rdf_mae: float | None,
    blew_up: list[str],
    min_distances: dict[str, float | None],
    min_distances_ref: dict[str, float | None],
    shifts: dict[str, float],
    framework_msd_A2: float | None,
    framework_msd_ref_A2: float | None,
    limits: VerdictLimits | None = None,
) -> dict:
    """Stable or unstable, and the failure modes named (each with its evidence):

    * ``blew up``: runs stopped by the MD checks (reasons given);
    * ``atom fusion``: species pairs closer than ``fusion_fraction`` x the reference's closest approach;
    * ``lattice mismatch``: species pairs whose first RDF peak moved more than ``peak_shift_A``;
    * ``framework melting``: the non-mobile species' MSD far above the reference's.

    ``stable`` needs no blow-up and RDF-MAE at most ``rdf_mae``; the other modes are named whenever seen.
    """
    lim = limits or VerdictLimits()
    modes: dict[str, object] = {}
    if blew_up:
        modes["blew up"] = blew_up
    fused = {k: [d, ref] for k, d in min_distances.items()
             if d is not None and (ref := min_distances_ref.get(k)) is not None and d < lim.fusion_fraction * ref}
    if fused:
        modes["atom fusion"] = fused
    moved = {k: s for k, s in shifts.items() if abs(s) > lim.peak_shift_A}
    if moved:
        modes["lattice mismatch"] = moved
    if (framework_msd_A2 is not None and framework_msd_ref_A2 is not None
            and framework_msd_A2 > max(lim.melting_factor * framework_msd_ref_A2, lim.melting_min_A2)):
        modes["framework melting"] = [framework_msd_A2, framework_msd_ref_A2]
    stable = not blew_up and rdf_mae is not None and rdf_mae <= lim.rdf_mae
    return {"stable": bool(stable), "rdf_mae": rdf_mae, "rdf_mae_threshold": lim.rdf_mae,
            "failure_modes": list(modes), "evidence": modes}
