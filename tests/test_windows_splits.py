"""Windows never cross trajectory ends; splits are seeded, disjoint, JSON round-trippable."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from _md_data import emt_frames, frames_to_trajectory
from longmd.data.splits import Split, random_frame_split, split_by_trajectory, split_time_blocks
from longmd.data.windows import Window, make_windows


@pytest.fixture(scope="module")
def trajectories():
    base = frames_to_trajectory(emt_frames(n_steps=12))
    parts = [(0, 12), (0, 7), (2, 3), (1, 10)]
    return [replace(base.slice(a, b), name=f"run{k}") for k, (a, b) in enumerate(parts)]


@pytest.mark.parametrize("length", [1, 2, 3, 7, 12, 13])
@pytest.mark.parametrize("stride", [1, 2, 5])
def test_windows_fit_inside_their_trajectory(length: int, stride: int) -> None:
    lengths = [12, 7, 1, 9, 0]
    windows = make_windows(lengths, length, stride)
    for w in windows:
        assert w.start >= 0 and w.stop <= lengths[w.traj] and w.length == length
        assert w.start % stride == 0
    expected = sum(max(0, (n - length) // stride + 1) for n in lengths if n >= length)
    assert len(windows) == expected == len(set(windows))
    assert windows == sorted(windows)


def test_no_window_longer_than_trajectory(trajectories) -> None:
    assert make_windows(trajectories, 13) == []
    assert make_windows(trajectories, 12) == [Window(0, 0, 12)]
    assert {w.traj for w in make_windows(trajectories, 8)} == {0, 3}


def test_windows_restricted_to_allowed_frames() -> None:
    frames = [range(0, 5), None, [0, 1, 2, 4, 5, 6]]
    windows = make_windows([10, 4, 8], 3, frames=frames)
    assert [(w.traj, w.start) for w in windows] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (2, 0), (2, 4)]
    with pytest.raises(ValueError):
        make_windows([10, 4], 3, frames=[None])
    with pytest.raises(ValueError):
        make_windows([10], 0)


def _frame_sets(split: Split, lengths: list[int]) -> dict[str, set[tuple[int, int]]]:
    out = {}
    for name, per_traj in zip(("train", "val", "test"), (split.frames(n) for n in ("train", "val", "test"))):
        out[name] = {(t, int(f)) for t, fr in enumerate(per_traj) for f in (range(lengths[t]) if fr is None else fr)}
    return out


def _check_partition(split: Split, lengths: list[int]) -> dict[str, set[tuple[int, int]]]:
    sets = _frame_sets(split, lengths)
    assert not (sets["train"] & sets["val"]) and not (sets["train"] & sets["test"])
    assert not (sets["val"] & sets["test"])
    assert len(sets["train"] | sets["val"] | sets["test"]) == sum(lengths)
    return sets


def test_split_by_trajectory(trajectories, tmp_path: Path) -> None:
    lengths = [len(t) for t in trajectories]
    split = split_by_trajectory(trajectories, val_fraction=0.25, test_fraction=0.25, seed=3)
    sets = _check_partition(split, lengths)
    for name in ("val", "test"):
        assert len(split.subsets[name]) == 1
    # whole trajectories: a trajectory is in exactly one subset
    owners = {t: {n for n, s in sets.items() if any(tt == t for tt, _ in s)} for t in range(4)}
    assert all(len(o) == 1 for o in owners.values())
    assert split_by_trajectory(4, 0.25, 0.25, seed=3).subsets == split.subsets
    others = [split_by_trajectory(4, 0.25, 0.25, seed=s).subsets["val"] for s in range(10)]
    assert len({tuple(o) for o in others}) > 1
    path = tmp_path / "split.json"
    split.save(path)
    again = Split.load(path)
    assert _frame_sets(again, lengths) == sets and again.method == "trajectory" and again.seed == 3
    with pytest.raises(ValueError, match="data.split=time_blocks") as err:  # config keys, not internal names
        split_by_trajectory(1, 0.2)
    assert "split_time_blocks" not in str(err.value) and "data.test_fraction=0" in str(err.value)


def test_split_time_blocks_hold_out_the_end(trajectories) -> None:
    lengths = [len(t) for t in trajectories]
    usable = [t for t in trajectories if len(t) >= 3]
    split = split_time_blocks(usable, val_fraction=0.2, test_fraction=0.1, seed=0)
    _check_partition(split, [len(t) for t in usable])
    for t in range(len(usable)):
        train, val = split.subsets["train"][t], split.subsets["val"][t]
        assert train.max() < val.min() and np.all(np.diff(val) == 1)
        test = split.subsets["test"].get(t)
        if test is not None:
            assert val.max() < test.min() and test.max() == len(usable[t]) - 1
    # training windows never reach held-out frames
    held = _frame_sets(split, [len(t) for t in usable])
    for w in split.windows("train", usable, length=3):
        assert all((w.traj, f) not in held["val"] | held["test"] for f in range(w.start, w.stop))
    with pytest.raises(ValueError, match="too few"):
        split_time_blocks(trajectories, val_fraction=0.2)  # the 1-frame trajectory
    assert lengths  # fixture untouched


def test_random_frame_split(trajectories) -> None:
    lengths = [len(t) for t in trajectories]
    split = random_frame_split(trajectories, val_fraction=0.2, seed=1)
    sets = _check_partition(split, lengths)
    assert len(sets["val"]) == round(0.2 * sum(lengths)) and not sets["test"]
    assert Split.from_json(split.to_json()).to_json() == split.to_json()
    assert _frame_sets(random_frame_split(trajectories, 0.2, seed=1), lengths) == sets
    assert _frame_sets(random_frame_split(trajectories, 0.2, seed=2), lengths) != sets
    single = split.windows("val", trajectories, length=1)
    assert {(w.traj, w.start) for w in single} == sets["val"]


def test_split_refuses_other_data(trajectories) -> None:
    split = random_frame_split(trajectories, 0.2, seed=1)
    with pytest.raises(ValueError, match="trajectories"):
        split.windows("train", trajectories[:3], length=1)
    with pytest.raises(ValueError, match="names"):
        split.windows("train", trajectories[::-1], length=1)


def test_bad_split_files_are_named(trajectories, tmp_path: Path) -> None:
    path = tmp_path / "split.json"
    path.write_text('{"format_version": 1}')
    with pytest.raises(ValueError, match=r"split\.json: missing key 'method'"):
        Split.load(path)
    path.write_text('{"format_version": 1, "method": "m", "seed": 0, "n_traj": 1}')
    with pytest.raises(ValueError, match=r"split\.json: missing key 'subsets'"):
        Split.load(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"split\.json: not JSON"):
        Split.load(path)
    random_frame_split(trajectories, 0.2, seed=1).save(path)
    with pytest.raises(ValueError, match=rf"{path}: split made for 4 trajectories, got 3"):
        Split.load(path).check(trajectories[:3])


def test_split_save_is_atomic(trajectories, tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "split.json"
    old = split_by_trajectory(4, 0.25, seed=0)
    old.save(path)

    def crash(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("os.fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        split_by_trajectory(4, 0.25, seed=1).save(path)
    assert Split.load(path) == old and [p.name for p in tmp_path.iterdir()] == ["split.json"]
