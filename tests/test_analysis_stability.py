"""Stability detection, tracked distances and sustained events on hand-made trajectories."""

from __future__ import annotations

import numpy as np
import pytest

from longmd.analysis.stability import (
    count_events,
    detect_instability,
    find_events,
    first_peak,
    min_distance,
    peak_shifts,
    stability_verdict,
    tracked_distances,
)


def _approach(n_frames: int = 20) -> np.ndarray:
    """Two atoms (plus a far spectator) approaching: d(t) = 2.0 - 0.1 t Å."""
    pos = np.zeros((n_frames, 3, 3))
    pos[:, 1, 0] = 2.0 - 0.1 * np.arange(n_frames)
    pos[:, 2] = [10.0, 10.0, 10.0]
    return pos


def test_hand_made_collapse() -> None:
    result = detect_instability(_approach(), frame_interval_fs=0.5, min_distance_threshold=0.55)
    assert (result.stable, result.frame, result.reason) == (False, 15, "min_distance")
    assert result.time_fs == pytest.approx(7.5)
    assert result.value == pytest.approx(0.5)


def test_stable_run_reports_total_time() -> None:
    result = detect_instability(_approach(10), frame_interval_fs=2.0, min_distance_threshold=0.5)
    assert result.stable and result.reason == "stable" and result.frame is None
    assert result.time_fs == pytest.approx(18.0)
    times = np.linspace(0.0, 90.0, 10)
    assert detect_instability(_approach(10), min_distance_threshold=0.5, times_fs=times).time_fs == 90.0


def test_nan_frame() -> None:
    pos = _approach()
    pos[3, 0, 1] = np.nan
    result = detect_instability(pos, frame_interval_fs=1.0, min_distance_threshold=0.1)
    assert (result.stable, result.frame, result.reason, result.time_fs) == (False, 3, "nan", 3.0)


def test_temperature_bound_and_nan_temperature() -> None:
    temps = np.full(20, 300.0)
    temps[5] = 5000.0
    result = detect_instability(_approach(), min_distance_threshold=0.1, temperatures=temps, max_temperature=2000.0)
    assert (result.frame, result.reason, result.value) == (5, "temperature", 5000.0)
    temps[2] = np.inf
    assert detect_instability(_approach(), min_distance_threshold=0.1, temperatures=temps).reason == "nan"


def test_collapse_through_periodic_boundary() -> None:
    pos = np.array([[[0.1, 5.0, 5.0], [9.8, 5.0, 5.0]]])
    cell = np.eye(3) * 10.0
    assert min_distance(pos[0], cell, True, 1.0) == pytest.approx(0.3)
    assert detect_instability(pos, cell, True, min_distance_threshold=0.5).reason == "min_distance"
    assert detect_instability(pos, cell, False, min_distance_threshold=0.5).stable


def test_tracked_distances_minimum_image() -> None:
    pos = np.array([[[0.5, 0.0, 0.0], [9.0, 0.0, 0.0], [0.5, 3.0, 4.0]]] * 2)
    pos[1, 1, 0] = 8.0
    d = tracked_distances(pos, [(0, 1), (0, 2)], np.eye(3) * 10.0, True)
    np.testing.assert_allclose(d, [[1.5, 5.0], [2.5, 5.0]])
    d_open = tracked_distances(pos, [(0, 1)])
    np.testing.assert_allclose(d_open[:, 0], [8.5, 7.5])


def test_sustained_events() -> None:
    values = np.array([0, 2, 2, 0, 2, 2, 2, 2, 0, 2], dtype=float)
    events = find_events(values, threshold=1.0, min_duration_fs=20.0, frame_interval_fs=10.0)
    assert [(e.start_frame, e.end_frame, e.duration_fs, e.ongoing) for e in events] == [(4, 7, 30.0, False)]
    everything = find_events(values, 1.0, 0.0, 10.0)
    assert len(everything) == 3 and everything[-1].ongoing
    assert count_events(values, 1.0, 10.0, 10.0) == 2
    assert count_events(values, 1.0, 0.0, 10.0, above=False) == 3
    assert count_events(np.array([np.nan, 5.0]), 1.0) == 1


def test_dissociation_from_tracked_distance() -> None:
    n = 200
    pos = np.zeros((n, 2, 3))
    pos[:, 1, 0] = 0.74
    pos[60:, 1, 0] = 2.5  # H-H breaks at frame 60 and stays apart
    pos[20:22, 1, 0] = 1.8  # a short excursion that is not a dissociation
    d = tracked_distances(pos, [(0, 1)])[:, 0]
    events = find_events(d, threshold=1.5, min_duration_fs=50.0, frame_interval_fs=1.0)
    assert len(events) == 1 and events[0].start_frame == 60 and events[0].ongoing


def test_first_peak_finds_a_gaussian_shell_between_bins() -> None:
    r = np.arange(0.025, 6.0, 0.05)  # the evaluation's bins: 120 over 6 Å
    shell = np.exp(-((r - 2.43) ** 2) / (2 * 0.1**2)) * 3 + np.exp(-((r - 4.1) ** 2) / (2 * 0.2**2)) * 4
    assert first_peak(r, shell) == pytest.approx(2.43, abs=0.01)  # first, not highest, shell
    moved = np.exp(-((r - 2.60) ** 2) / (2 * 0.1**2)) * 3
    assert peak_shifts(r, {"P-S": moved, "Li-S": shell}, {"P-S": shell, "Li-S": shell})["P-S"] == pytest.approx(
        0.17, abs=0.02)


def test_verdict_names_each_failure_mode_from_its_evidence() -> None:
    ref_min = {"Li-S": 2.3, "P-S": 1.95, "Li-Li": 2.2}
    good = stability_verdict(0.012, [], {"Li-S": 2.25, "P-S": 1.96, "Li-Li": 2.0}, ref_min, {"P-S": 0.02}, 0.3, 0.25)
    assert good["stable"] and good["failure_modes"] == []
    fused = stability_verdict(0.03, [], {"Li-S": 2.2, "P-S": 1.95, "Li-Li": 0.9}, ref_min, {"P-S": 0.0}, 0.3, 0.25)
    assert not fused["stable"] and fused["failure_modes"] == ["atom fusion"]
    assert fused["evidence"]["atom fusion"] == {"Li-Li": [0.9, 2.2]}
    shifted = stability_verdict(0.015, [], ref_min, ref_min, {"P-S": 0.25, "Li-S": -0.05}, 0.3, 0.25)
    assert shifted["stable"] and shifted["failure_modes"] == ["lattice mismatch"]  # named, even under 0.02
    melted = stability_verdict(0.05, [], ref_min, ref_min, {}, 6.0, 0.3)
    assert melted["failure_modes"] == ["framework melting"]
    rattling = stability_verdict(0.05, [], ref_min, ref_min, {}, 0.8, 0.2)  # 4x, but under 1 Å^2: no melt
    assert rattling["failure_modes"] == [] and not rattling["stable"]
    broken = stability_verdict(0.001, ["run 0: min_distance"], ref_min, ref_min, {}, None, None)
    assert not broken["stable"] and broken["failure_modes"] == ["blew up"]
