"""Jaccard similarity of neighbour sets on static and hand-made trajectories."""

from __future__ import annotations

import numpy as np
import pytest

from longmd.analysis.neighborhood import jaccard_profile, max_reuse_offset


def test_static_trajectory_is_one() -> None:
    frame = np.random.default_rng(0).uniform(0, 8, size=(20, 3))
    traj = np.repeat(frame[None], 6, axis=0)
    profile = jaccard_profile(traj, np.eye(3) * 8, True, cutoff=3.0, max_offset=5)
    np.testing.assert_array_equal(profile.ks, [1, 2, 3, 4, 5])
    np.testing.assert_allclose(profile.per_atom, 1.0)
    assert max_reuse_offset(profile, level=0.99) == 5


def test_wrapping_into_the_cell_changes_nothing() -> None:
    frame = np.array([[0.2, 1.0, 1.0], [1.2, 1.0, 1.0], [5.0, 5.0, 5.0]])
    moved = frame.copy()
    moved[0, 0] += 10.0  # the same atom one lattice vector away
    profile = jaccard_profile(np.stack([frame, moved]), np.eye(3) * 10, True, cutoff=1.5, max_offset=1)
    np.testing.assert_allclose(profile.per_atom, 1.0)


def test_one_atom_swaps_neighbours() -> None:
    # frame 0: pairs (0, 1) and (2, 3); frames 1-2: atom 0 joins atoms 2 and 3, atom 1 is alone.
    f0 = np.array([[0.0, 0, 0], [1.0, 0, 0], [10.0, 0, 0], [11.0, 0, 0]])
    f1 = f0.copy()
    f1[0] = [10.5, 0.8, 0.0]
    traj = np.stack([f0, f1, f1])
    profile = jaccard_profile(traj, None, False, cutoff=1.5, max_offset=2, numbers=[1, 6, 6, 6])
    # k = 1: origins (0->1) and (1->2); k = 2: origin (0->2) only.
    np.testing.assert_allclose(profile.per_atom, [[0.5, 0.5, 0.75, 0.75], [0.0, 0.0, 0.5, 0.5]])
    np.testing.assert_allclose(profile.mean, [0.625, 0.25])
    assert profile.species == [1, 6]
    np.testing.assert_allclose(profile.per_species, [[0.5, 2 / 3], [0.0, 1 / 3]])
    assert max_reuse_offset(profile, level=0.6, by="mean") == 1
    assert max_reuse_offset(profile, level=0.6) == 0
    assert max_reuse_offset(np.array([1.0, 0.99, 0.9, 0.97]), level=0.95) == 2


def test_origin_stride_and_bad_offset() -> None:
    traj = np.random.default_rng(1).uniform(0, 6, size=(7, 10, 3))
    full = jaccard_profile(traj, np.eye(3) * 6, True, 2.5, 3)
    strided = jaccard_profile(traj, np.eye(3) * 6, True, 2.5, 3, origin_stride=2)
    assert full.per_atom.shape == strided.per_atom.shape == (3, 10)
    assert np.all((full.per_atom >= 0) & (full.per_atom <= 1))
    with pytest.raises(ValueError):
        jaccard_profile(traj, None, False, 2.5, 7)
