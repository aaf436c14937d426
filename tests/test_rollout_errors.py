"""rollout_errors: a rollout that blows up leaves its batch; the others go on exactly as they would alone."""

from __future__ import annotations

import numpy as np
import torch

from _md_data import emt_frames, frames_to_trajectory
from conftest import make_emt_trajectories
from longmd.analysis.rollout_test import rollout_errors
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
