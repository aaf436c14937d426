"""Subsequence windows (trajectory, start, length S): the training points of Dynamic Training.

A window never crosses the end of its trajectory; a single frame is a window of length 1.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

from longmd.data.trajectory import Trajectory


@dataclass(frozen=True, order=True)
class Window:
    """Frames ``start, ..., start + length - 1`` of trajectory number ``traj``."""

    traj: int
    start: int
    length: int

    @property
    def stop(self) -> int:
        """One past the last frame."""
        return self.start + self.length


def make_windows(
    trajectories: Sequence[Trajectory | int],
    length: int,
    stride: int = 1,
    frames: Sequence[Collection[int] | None] | None = None,
) -> list[Window]:
    """All windows of ``length`` frames, starts every ``stride`` frames, in (traj, start) order.

    Args:
        trajectories: trajectories (or their frame counts).
        length: frames per window (S >= 1); a trajectory shorter than S gives no window.
        stride: spacing of window starts.
        frames: optional allowed frames per trajectory (None = all frames); a window is kept only if
            *every* frame it covers is allowed, so windows of a training split never reach held-out frames.
    """
    if length < 1 or stride < 1:
        raise ValueError(f"length and stride must be >= 1, got {length}, {stride}")
    if frames is not None and len(frames) != len(trajectories):
        raise ValueError(f"frames has {len(frames)} entries for {len(trajectories)} trajectories")
    out: list[Window] = []
    for t, traj in enumerate(trajectories):
        n = traj if isinstance(traj, (int, np.integer)) else len(traj)
        starts = np.arange(0, n - length + 1, stride)
        allowed = None if frames is None else frames[t]
        if allowed is not None and starts.size:
            mask = np.zeros(n, dtype=bool)
            idx = np.fromiter(allowed, dtype=np.int64)
            mask[idx[(idx >= 0) & (idx < n)]] = True
            # number of allowed frames in [s, s + length) must equal length
            run = np.concatenate([[0], np.cumsum(mask)])
            starts = starts[run[starts + length] - run[starts] == length]
        out.extend(Window(t, int(s), length) for s in starts)
    return out
