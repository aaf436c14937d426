"""rollout_errors: a rollout that blows up leaves its batch; the others go on exactly as they would alone."""

from __future__ import annotations

import numpy as np
import torch

from _md_data import emt_frames, frames_to_trajectory
from conftest import make_emt_trajectories
from longmd.analysis.rollout_test import ErrorSums, RolloutErrors, rollout_errors
from longmd.data.windows import Window
from longmd.io.read import read_trajectories
from longmd.models.lj import LennardJones


class BlowsUpSmallSystems(LennardJones):
    """Lennard-Jones whose energy turns NaN, after ``calls`` evaluations, for systems of fewer than 10 atoms."""

    def __init__(self, calls: int | None = None) -> None:
        super().__init__(epsilon=0.01, sigma=2.3, cutoff=5.0, r_switch=4.0)
        self.calls_left = calls

    def forward(self, graph):
        energy = super().forward(graph)
        if self.calls_left is not None:
            self.calls_left -= 1
            if self.calls_left < 0:
                small = torch.bincount(graph.system, minlength=graph.n_systems) < 10
                energy = energy + torch.where(small, float("nan"), 0.0)  # NaN energy, finite forces elsewhere
        return energy


def test_a_blown_up_rollout_leaves_the_batch_and_the_others_go_on(tmp_path) -> None:
    small = frames_to_trajectory(emt_frames(n_steps=12), name="small")  # 8 atoms
    big = read_trajectories(make_emt_trajectories(tmp_path / "big.extxyz", n_traj=1, n_frames=12))[0]  # 32 atoms
    trajectories = [small, big]
    windows = [Window(0, 0, 8), Window(1, 0, 8), Window(0, 2, 8), Window(1, 3, 8)]
    kwargs = dict(batch_size=4, dtype=torch.float64)
    # One call at step 0, one per step: the 4th call (step 3) blows up both small systems.
    errors = rollout_errors(BlowsUpSmallSystems(calls=3), trajectories, windows, **kwargs)
    assert errors.failed == 2 and errors.extra["failed_at_step"] == [3, 3]
    healthy = rollout_errors(BlowsUpSmallSystems(), trajectories, windows, **kwargs)
    big_alone = rollout_errors(BlowsUpSmallSystems(), trajectories, [windows[1], windows[3]], **kwargs)
    np.testing.assert_array_equal(errors.mepa[:3], healthy.mepa[:3])  # before the blow-up: the same runs
    np.testing.assert_allclose(errors.position_deviation[3:], big_alone.position_deviation[3:], rtol=0, atol=1e-12)
    assert np.all(errors.mepa[3:] > 1e5)  # failed rollouts score 1e6 per component from then on


def test_band_over_starts_from_per_start_sums_by_hand() -> None:
    """Three starts of 2 steps, species H (1 atom) and C (2 atoms): the per-start MEPA (sum over species of
    the force-component MAE), its mean and its 16-84 percentile band, computed by hand."""
    numbers = np.array([1, 6, 6])
    sums = ErrorSums.zeros(2, 2)
    errors_per_start = [0.3, 0.6, 1.5]  # every force component of start k is off by this much at step 1
    for e in errors_per_start:
        ref = np.zeros((2, 3, 3))
        pred = ref.copy()
        pred[1] += e
        pred[1, 1:] += e  # C atoms twice as wrong
        sums.add_forces(pred, ref, numbers, [1, 6], window=True)
    sums.n_windows = 3
    over = RolloutErrors.from_sums([1, 6], sums).over_starts()
    assert over["n"] == 3
    mepa_1 = [e + 2 * e for e in errors_per_start]  # H MAE e plus C MAE 2e: 0.9, 1.8, 4.5
    np.testing.assert_allclose(over["mepa"]["mean"], [0.0, (0.9 + 1.8 + 4.5) / 3], atol=1e-12)
    # Percentiles of three sorted values a, b, c (linear interpolation): 16 % at a + 0.32 (b - a),
    # 84 % at b + 0.68 (c - b).
    np.testing.assert_allclose(over["mepa"]["lo"], [0.0, mepa_1[0] + 0.32 * (mepa_1[1] - mepa_1[0])], atol=1e-12)
    np.testing.assert_allclose(over["mepa"]["hi"], [0.0, mepa_1[1] + 0.68 * (mepa_1[2] - mepa_1[1])], atol=1e-12)
    np.testing.assert_allclose(over["per_species"]["mean"][1], [0.8, 1.6], atol=1e-12)  # H, C
    np.testing.assert_allclose(sums.abs_sum, np.sum(sums.window_abs_sum, axis=0))  # totals = sum of the starts


def test_rollouts_keep_each_start_and_its_mean_is_the_pooled_curve(tmp_path) -> None:
    big = read_trajectories(make_emt_trajectories(tmp_path / "big.extxyz", n_traj=1, n_frames=12))[0]
    windows = [Window(0, 0, 6), Window(0, 2, 6), Window(0, 5, 6)]
    errors = rollout_errors(BlowsUpSmallSystems(), [big], windows, batch_size=2, dtype=torch.float64)
    over = errors.over_starts()
    assert over["n"] == 3 and len(errors.sums.window_abs_sum) == 3
    np.testing.assert_allclose(over["mepa"]["mean"], errors.mepa, rtol=1e-12)  # one composition: mean = pooled
    alone = rollout_errors(BlowsUpSmallSystems(), [big], [windows[2]], dtype=torch.float64)
    np.testing.assert_allclose(errors.sums.window_abs_sum[2], alone.sums.abs_sum, rtol=1e-12)
    assert np.any(over["mepa"]["hi"] > over["mepa"]["lo"])
