"""Training data of stride predictors: trajectories seen every k-th stored step, forward and time-reversed.

A trajectory stored every step dt holds, for a stride of k steps, k interleaved trajectories of timestep k·dt
(offsets 0..k-1). Each becomes a :class:`~longmd.data.trajectory.Trajectory` of its own, so a window of K + 1
frames of it is a chain of K strides and never crosses from one trajectory into another. Its time reverse
(frames in reverse order, velocities negated; forces and energies unchanged, since they depend on positions
only) is also an exact trajectory of Hamiltonian dynamics: FlashMD adds every pair reversed in this way.

:func:`stride_view` maps a split of the original trajectories onto the derived ones frame by frame, so no
derived frame of a held-out original frame is trained on. Reversed copies are added to the training subset
only (validation and test score forward time).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from longmd.data.splits import Frames, Split
from longmd.data.trajectory import Trajectory


@dataclass(frozen=True)
class Derived:
    """Where derived trajectory came from: original ``traj``, first stored frame ``offset``, every ``k``-th frame,
    in reverse time if ``reversed``."""

    traj: int
    offset: int
    k: int
    reversed: bool = False

    def original_frames(self, n_frames: int) -> np.ndarray:
        """Original frame index of each derived frame."""
        frames = np.arange(self.offset, n_frames, self.k)
        return frames[::-1] if self.reversed else frames


def subsampled(trajectory: Trajectory, k: int, offset: int = 0) -> Trajectory:
    """Every ``k``-th frame from ``offset`` on, as a trajectory of timestep ``k`` times the original."""
    if k < 1 or not 0 <= offset < k:
        raise ValueError(f"subsampled: need k >= 1 and 0 <= offset < k, got k={k}, offset={offset}")
    s = slice(offset, None, k)
    return replace(trajectory, name=f"{trajectory.name}[{offset}::{k}]", positions=trajectory.positions[s],
                   cell=trajectory.cell[s], forces=trajectory.forces[s], energy=trajectory.energy[s],
                   velocities=trajectory.velocities[s], timestep_fs=k * trajectory.timestep_fs)


def time_reversed(trajectory: Trajectory) -> Trajectory:
    """The trajectory run backwards: frames in reverse order, velocities negated."""
    r = slice(None, None, -1)
    return replace(trajectory, name=f"{trajectory.name}[reversed]", positions=trajectory.positions[r],
                   cell=trajectory.cell[r], forces=trajectory.forces[r], energy=trajectory.energy[r],
                   velocities=-trajectory.velocities[r])


def stride_view(trajectories: Sequence[Trajectory], split: Split, k: int,
                reverse: bool = True) -> tuple[list[Trajectory], Split, list[Derived]]:
    """The derived trajectories of stride ``k`` (every offset, plus reversed copies of the training ones when
    ``reverse``), the split mapped onto them, and where each came from.

    A derived frame belongs to a subset when its original frame does; derived trajectories with fewer than 2
    frames (no stride at all) are left out.
    """
    out: list[Trajectory] = []
    origins: list[Derived] = []
    subsets: dict[str, Frames] = {name: {} for name in split.subsets}
    for t, traj in enumerate(trajectories):
        for offset in range(min(k, len(traj))):
            forward = subsampled(traj, k, offset)
            if len(forward) < 2:
                continue
            for back in (False, True) if reverse else (False,):
                origin = Derived(t, offset, k, back)
                frames = origin.original_frames(len(traj))
                chosen = {}
                for name, subset in split.subsets.items():
                    if t not in subset or (back and name != "train"):
                        continue
                    allowed = subset[t]
                    chosen[name] = None if allowed is None else np.flatnonzero(np.isin(frames, allowed))
                if not any(v is None or len(v) for v in chosen.values()):
                    continue
                for name, derived_frames in chosen.items():
                    subsets[name][len(out)] = derived_frames
                out.append(time_reversed(forward) if back else forward)
                origins.append(origin)
    view = Split(method=f"{split.method}+stride{k}{'+reversed' if reverse else ''}", seed=split.seed, n_traj=len(out),
                 subsets=subsets, names=[tr.name for tr in out], params={**split.params, "stride_frames": k})
    return out, view, origins
