"""Stride-predictor training data: every k-th frame, every offset, time-reversed copies, the split carried over."""

from __future__ import annotations

import numpy as np
import pytest

from longmd.data.splits import split_by_trajectory, split_time_blocks
from longmd.data.strides import stride_view, subsampled, time_reversed
from longmd.data.trajectory import Trajectory


def trajectory(name: str, n_frames: int, seed: int = 0) -> Trajectory:
    rng = np.random.default_rng(seed)
    n = 3
    return Trajectory(name=name, numbers=np.array([1, 6, 8]), masses=np.array([1.0, 12.0, 16.0]),
                      positions=rng.normal(size=(n_frames, n, 3)), cell=np.zeros((n_frames, 3, 3)),
                      pbc=np.zeros(3, bool), forces=rng.normal(size=(n_frames, n, 3)),
                      energy=rng.normal(size=n_frames), velocities=rng.normal(size=(n_frames, n, 3)),
                      timestep_fs=0.5)


def test_subsampled_has_the_stride_as_timestep():
    tr = trajectory("a", 20)
    sub = subsampled(tr, 4, offset=1)
    assert sub.timestep_fs == 2.0 and len(sub) == 5
    np.testing.assert_array_equal(sub.positions, tr.positions[1::4])
    with pytest.raises(ValueError, match="0 <= offset < k"):
        subsampled(tr, 4, offset=4)


def test_reversing_a_pair_maps_target_to_input():
    tr = subsampled(trajectory("a", 20), 4)
    back = time_reversed(tr)
    m = tr.masses[:, None]
    for f in range(len(tr) - 1):
        g = len(tr) - 2 - f  # the reversed pair (f, f+1) is the forward pair (g+1, g)
        np.testing.assert_array_equal(back.positions[f], tr.positions[g + 1])
        np.testing.assert_array_equal(back.velocities[f] * m, -tr.velocities[g + 1] * m)
        np.testing.assert_array_equal(back.positions[f + 1], tr.positions[g])
        np.testing.assert_array_equal(back.velocities[f + 1] * m, -tr.velocities[g] * m)
        np.testing.assert_array_equal(back.forces[f], tr.forces[g + 1])  # forces depend on positions only


def test_split_by_trajectory_carries_over_and_reversed_copies_only_train():
    trajs = [trajectory(f"t{k}", 21, k) for k in range(4)]
    split = split_by_trajectory(trajs, 0.25, 0.25, seed=1)
    derived, view, origins = stride_view(trajs, split, 4)
    assert len(derived) == view.n_traj == len(origins)
    assert all(tr.timestep_fs == 2.0 for tr in derived)
    for name, subset in view.subsets.items():
        for d in subset:
            assert origins[d].traj in split.subsets[name]  # the original trajectory's subset
            assert not origins[d].reversed or name == "train"
    n_train = len(split.subsets["train"])
    assert sum(o.reversed for o in origins) == 4 * n_train  # every training offset reversed once
    assert len(derived) == 4 * 4 + 4 * n_train
    # a window of the view is a chain of strides inside one original trajectory
    for w in view.windows("train", derived, 3):
        o = origins[w.traj]
        frames = o.original_frames(21)[w.start : w.stop]
        assert np.all(np.abs(np.diff(frames)) == 4)
        np.testing.assert_array_equal(derived[w.traj].positions[w.start : w.stop], trajs[o.traj].positions[frames])


def test_time_blocks_never_reach_held_out_frames():
    trajs = [trajectory("a", 40), trajectory("b", 40, 1)]
    split = split_time_blocks(trajs, 0.25)
    derived, view, origins = stride_view(trajs, split, 3, reverse=False)
    assert not any(o.reversed for o in origins)
    for name in ("train", "val"):
        allowed = split.subsets[name]
        for w in view.windows(name, derived, 2):
            o = origins[w.traj]
            frames = o.original_frames(40)[w.start : w.stop]
            assert np.isin(frames, allowed[o.traj]).all()
