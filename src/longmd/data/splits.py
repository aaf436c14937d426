"""Seeded train/validation/test splits that keep the time order, saved as JSON in the run directory.

- :func:`split_by_trajectory`: whole trajectories held out (no leakage between correlated frames).
- :func:`split_time_blocks`: a contiguous block at the end of every trajectory held out.
- :func:`random_frame_split`: the classic shuffled-frame split, for conventional (S = 1) training only.

A :class:`Split` maps each subset to ``{trajectory index: frame indices or None (= all frames)}``; feed
:meth:`Split.frames` to :func:`longmd.data.windows.make_windows`, or use :meth:`Split.windows`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from longmd.data.trajectory import Trajectory
from longmd.data.windows import Window, make_windows

SUBSETS = ("train", "val", "test")
FORMAT_VERSION = 1

Frames = dict[int, np.ndarray | None]


@dataclass
class Split:
    """Which frames of which trajectories belong to train / val / test.

    Attributes:
        method: how it was made ("trajectory", "time_block", "random_frame").
        seed: the seed used.
        n_traj: number of trajectories in the dataset it was made for.
        subsets: ``{"train"|"val"|"test": {traj: sorted frame indices, or None for all frames}}``.
        names: trajectory names, to check the split is applied to the same data (optional).
        params: the fractions and other arguments, for the record.
        path: the file it was loaded from (named in errors), if any.
    """

    method: str
    seed: int
    n_traj: int
    subsets: dict[str, Frames]
    names: list[str] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    path: str | None = field(default=None, compare=False)

    def frames(self, subset: str) -> list[np.ndarray | None]:
        """Allowed frames per trajectory for ``make_windows`` (empty array = trajectory not in subset)."""
        chosen = self.subsets[subset]
        return [chosen.get(t, np.zeros(0, dtype=np.int64)) for t in range(self.n_traj)]

    def windows(
        self, subset: str, trajectories: Sequence[Trajectory | int], length: int, stride: int = 1
    ) -> list[Window]:
        """Windows of ``length`` frames lying entirely inside ``subset``."""
        self.check(trajectories)
        return make_windows(trajectories, length, stride, frames=self.frames(subset))

    def check(self, trajectories: Sequence[Trajectory | int]) -> None:
        """Raise ValueError if the trajectories are not those the split was made for."""
        where = f"{self.path}: " if self.path else ""
        if len(trajectories) != self.n_traj:
            raise ValueError(f"{where}split made for {self.n_traj} trajectories, got {len(trajectories)}")
        if self.names is not None:
            names = [getattr(t, "name", None) for t in trajectories]
            if None not in names and names != self.names:
                raise ValueError(f"{where}split made for trajectories with other names (different data or order)")

    def to_json(self) -> str:
        """JSON text; frame sets are stored as [start, stop) runs."""
        return json.dumps(
            {
                "format_version": FORMAT_VERSION,
                "method": self.method,
                "seed": self.seed,
                "n_traj": self.n_traj,
                "names": self.names,
                "params": self.params,
                "subsets": {
                    name: {str(t): None if f is None else _to_runs(f) for t, f in sorted(chosen.items())}
                    for name, chosen in self.subsets.items()
                },
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str, source: str = "split") -> Split:
        """Parse :meth:`to_json` output; errors (ValueError) name ``source`` and the missing or bad key."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{source}: not JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise ValueError(f"{source}: a split must be a JSON object")
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{source}: unsupported split format version {data.get('format_version')}")
        missing = [k for k in ("method", "seed", "n_traj", "subsets") if k not in data]
        if missing:
            raise ValueError(f"{source}: missing key {missing[0]!r}")
        try:
            subsets = {
                name: {int(t): None if runs is None else _from_runs(runs) for t, runs in chosen.items()}
                for name, chosen in data["subsets"].items()
            }
        except (AttributeError, TypeError, ValueError) as exc:
            raise ValueError(f"{source}: key 'subsets': invalid ({exc})") from exc
        return cls(data["method"], data["seed"], data["n_traj"], subsets, data.get("names"), data.get("params", {}))

    def save(self, path: str | Path) -> None:
        """Write :meth:`to_json` atomically."""
        from longmd.atomic import atomic_write_text  # imports torch: only when writing

        atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> Split:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ValueError(f"{path}: cannot read split ({exc.strerror or exc})") from exc
        split = cls.from_json(text, str(path))
        split.path = str(path)
        return split


def _to_runs(frames: np.ndarray) -> list[list[int]]:
    frames = np.asarray(frames, dtype=np.int64)
    if frames.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(frames) != 1) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [frames.size]])
    return [[int(frames[a]), int(frames[b - 1]) + 1] for a, b in zip(starts, stops, strict=True)]


def _from_runs(runs: list[list[int]]) -> np.ndarray:
    if not runs:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in runs])


def _count(n: int, fraction: float) -> int:
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fractions must be in [0, 1), got {fraction}")
    return 0 if fraction == 0 else max(1, round(fraction * n))


def split_by_trajectory(
    n_traj: int | Sequence[Trajectory], val_fraction: float, test_fraction: float = 0.0, seed: int = 0
) -> Split:
    """Hold out whole trajectories: at least one for each non-zero fraction, at least one left to train."""
    names = None if isinstance(n_traj, int) else [t.name for t in n_traj]
    n = n_traj if isinstance(n_traj, int) else len(n_traj)
    n_val, n_test = _count(n, val_fraction), _count(n, test_fraction)
    if n - n_val - n_test < 1:
        raise ValueError(
            f"{n} trajectories cannot hold out {n_val} for validation and {n_test} for test; "
            "with few trajectories set data.split=time_blocks (a block at the end of each trajectory is validated "
            "on) and/or data.test_fraction=0, or lower data.val_fraction"
        )
    order = np.random.default_rng(seed).permutation(n)
    parts = {"val": order[:n_val], "test": order[n_val : n_val + n_test], "train": order[n_val + n_test :]}
    subsets: dict[str, Frames] = {k: {int(t): None for t in sorted(v)} for k, v in parts.items()}
    params = {"val_fraction": val_fraction, "test_fraction": test_fraction}
    return Split("trajectory", seed, n, {k: subsets[k] for k in SUBSETS}, names, params)


def split_time_blocks(
    trajectories: Sequence[Trajectory], val_fraction: float, seed: int = 0, test_fraction: float = 0.0
) -> Split:
    """Hold out the end of every trajectory: frames ``[train | val | test]`` in time order.

    Deterministic (the blocks are at the ends); ``seed`` is recorded for a uniform interface.
    """
    subsets: dict[str, Frames] = {k: {} for k in SUBSETS}
    for t, traj in enumerate(trajectories):
        n = len(traj)
        n_val, n_test = _count(n, val_fraction), _count(n, test_fraction)
        n_train = n - n_val - n_test
        if n_train < 1:
            raise ValueError(f"trajectory {traj.name!r} has {n} frames, too few to hold out blocks")
        subsets["train"][t] = np.arange(0, n_train)
        if n_val:
            subsets["val"][t] = np.arange(n_train, n_train + n_val)
        if n_test:
            subsets["test"][t] = np.arange(n_train + n_val, n)
    params = {"val_fraction": val_fraction, "test_fraction": test_fraction}
    names = [t.name for t in trajectories]
    return Split("time_block", seed, len(trajectories), subsets, names, params)


def random_frame_split(
    trajectories: Sequence[Trajectory], val_fraction: float = 0.05, seed: int = 0, test_fraction: float = 0.0
) -> Split:
    """Shuffle all frames of all trajectories and hold out fractions (conventional training only).

    Neighbouring frames are strongly correlated, so validation scores from this split are optimistic.
    """
    lengths = np.array([len(t) for t in trajectories], dtype=np.int64)
    total = int(lengths.sum())
    n_val, n_test = _count(total, val_fraction), _count(total, test_fraction)
    if total - n_val - n_test < 1:
        raise ValueError(f"{total} frames are too few for the requested split")
    order = np.random.default_rng(seed).permutation(total)
    traj_of = np.repeat(np.arange(len(lengths)), lengths)
    frame_of = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    parts = {"val": order[:n_val], "test": order[n_val : n_val + n_test], "train": order[n_val + n_test :]}
    subsets: dict[str, Frames] = {}
    for name in SUBSETS:
        flat = np.sort(parts[name])
        subsets[name] = {int(t): frame_of[flat[traj_of[flat] == t]] for t in np.unique(traj_of[flat])}
    params = {"val_fraction": val_fraction, "test_fraction": test_fraction}
    names = [t.name for t in trajectories]
    return Split("random_frame", seed, len(trajectories), subsets, names, params)
