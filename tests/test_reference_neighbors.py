"""Reference neighbour lists: correct per frame, cached on disk, invalidated by cutoff or data changes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import longmd.data.reference_neighbors as refnb
from _md_data import emt_frames, frames_to_trajectory, wrapped
from longmd.data.reference_neighbors import ReferenceNeighbors
from longmd.neighbors import neighbor_list


@pytest.fixture(scope="module")
def trajectories():
    frames = emt_frames(n_steps=8)
    a = frames_to_trajectory(wrapped(frames), name="a")
    b = replace(a.slice(2, 6), name="b")
    return [a, b]


class Spy:
    """Counts calls to the neighbour search."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return neighbor_list(*args, **kwargs)


@pytest.fixture
def spy(monkeypatch) -> Spy:
    s = Spy()
    monkeypatch.setattr(refnb, "neighbor_list", s)
    return s


def test_lists_match_direct_search(trajectories, tmp_path: Path, spy: Spy) -> None:
    nl = ReferenceNeighbors.build(trajectories, 4.0, cache_dir=tmp_path)
    assert spy.calls == 12 and nl.n_traj == 2
    for t, traj in enumerate(trajectories):
        for f in range(len(traj)):
            got = nl.get(t, f)
            ref = neighbor_list(traj.positions[f], traj.cell[f], traj.pbc, 4.0)
            for g, r in zip(got, ref, strict=True):
                assert g.dtype == np.int64 and np.array_equal(g, r)
    assert nl.shifts.dtype == np.int8 and nl.i.dtype == np.int32  # compact storage
    with pytest.raises(IndexError):
        nl.get(1, 4)


def test_cache_reused_and_invalidated(trajectories, tmp_path: Path, spy: Spy) -> None:
    first = ReferenceNeighbors.build(trajectories, 4.0, cache_dir=tmp_path)
    assert spy.calls == 12 and len(list(tmp_path.glob("*.npz"))) == 1
    again = ReferenceNeighbors.build(trajectories, 4.0, cache_dir=tmp_path)
    assert spy.calls == 12  # loaded, not rebuilt
    for name in ("i", "j", "shifts", "offsets", "frame_start"):
        assert np.array_equal(getattr(first, name), getattr(again, name))
    ReferenceNeighbors.build(trajectories, 4.5, cache_dir=tmp_path)
    assert spy.calls == 24  # new cutoff
    moved = [replace(trajectories[0], positions=trajectories[0].positions + 1e-6), trajectories[1]]
    ReferenceNeighbors.build(moved, 4.0, cache_dir=tmp_path)
    assert spy.calls == 36  # new data
    ReferenceNeighbors.build(trajectories[:1], 4.0, cache_dir=tmp_path)
    assert spy.calls == 44  # other set of trajectories
    assert len(list(tmp_path.glob("*.npz"))) == 4
    assert not list(tmp_path.glob("*.tmp"))


def test_default_cache_dir_from_env_and_no_cache(trajectories, tmp_path: Path, monkeypatch, spy: Spy) -> None:
    monkeypatch.setenv("LONGMD_CACHE", str(tmp_path / "cache"))
    ReferenceNeighbors.build(trajectories, 3.0)
    assert len(list((tmp_path / "cache" / "neighbors").glob("*.npz"))) == 1
    ReferenceNeighbors.build(trajectories, 3.0)
    assert spy.calls == 12
    ReferenceNeighbors.build(trajectories, 3.0, use_cache=False)
    assert spy.calls == 24


def test_corrupt_cache_file_is_rebuilt(trajectories, tmp_path: Path, spy: Spy) -> None:
    ReferenceNeighbors.build(trajectories, 4.0, cache_dir=tmp_path)
    (path,) = tmp_path.glob("*.npz")
    path.write_bytes(b"truncated")
    nl = ReferenceNeighbors.build(trajectories, 4.0, cache_dir=tmp_path)
    assert spy.calls == 24 and len(nl.offsets) == 13
    assert ReferenceNeighbors.build(trajectories, 4.0, cache_dir=tmp_path).key == nl.key
    assert spy.calls == 24
