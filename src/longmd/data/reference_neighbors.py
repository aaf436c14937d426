"""Neighbour lists (i, j, S) of every stored frame, built once with vesin and cached on disk.

Dynamic Training cannot differentiate through a neighbour search, so each rollout step uses the list of
the matching reference frame. Lists are stored compactly (all frames concatenated plus offsets) in a
``.npz`` under the cache directory, keyed by a hash of the cutoff, the positions/cells/pbc and the format
version: a second run loads them, a change of cutoff or data builds new ones.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from longmd.atomic import atomic_write
from longmd.data.trajectory import Trajectory
from longmd.neighbors import neighbor_list
from longmd.progress import bars_disabled

FORMAT_VERSION = 1
PROGRESS_MIN_FRAMES = 200  # show a progress bar from this many frames on


def default_cache_dir() -> Path:
    """``$LONGMD_CACHE`` or ``~/.cache/longmd``."""
    return Path(os.environ.get("LONGMD_CACHE") or Path.home() / ".cache" / "longmd")


def cache_key(trajectories: Sequence[Trajectory], cutoff: float) -> str:
    """Hash of everything the lists depend on."""
    h = hashlib.blake2b(digest_size=20)
    h.update(f"longmd-reference-neighbors-v{FORMAT_VERSION};cutoff={float(cutoff)!r};".encode())
    for traj in trajectories:
        h.update(f"traj;{traj.positions.shape};".encode())
        for arr in (traj.positions, traj.cell, traj.pbc):
            h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


class ReferenceNeighbors:
    """Neighbour lists of all frames of a list of trajectories.

    Attributes:
        cutoff: radius, Å.
        i, j: concatenated pair indices of all frames (int32).
        shifts: concatenated integer cell shifts (E, 3), smallest integer type that fits.
        offsets: (n_frames_total + 1,) start of each frame's pairs in ``i``/``j``/``shifts``.
        frame_start: (n_traj + 1,) index of each trajectory's first frame in ``offsets``.
    """

    def __init__(
        self,
        cutoff: float,
        i: np.ndarray,
        j: np.ndarray,
        shifts: np.ndarray,
        offsets: np.ndarray,
        frame_start: np.ndarray,
        key: str = "",
    ) -> None:
        self.cutoff = float(cutoff)
        self.i, self.j, self.shifts = i, j, shifts
        self.offsets, self.frame_start = offsets, frame_start
        self.key = key

    @property
    def n_traj(self) -> int:
        return len(self.frame_start) - 1

    def get(self, traj: int, frame: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(i, j, S) of one frame as int64 arrays."""
        n_frames = self.frame_start[traj + 1] - self.frame_start[traj]
        if not 0 <= frame < n_frames:
            raise IndexError(f"frame {frame} out of range for trajectory {traj} with {n_frames} frames")
        f = self.frame_start[traj] + frame
        a, b = self.offsets[f], self.offsets[f + 1]
        return (
            self.i[a:b].astype(np.int64),
            self.j[a:b].astype(np.int64),
            self.shifts[a:b].astype(np.int64),
        )

    @classmethod
    def build(
        cls,
        trajectories: Sequence[Trajectory],
        cutoff: float,
        cache_dir: str | Path | None = None,
        *,
        use_cache: bool = True,
        progress: bool = True,
    ) -> ReferenceNeighbors:
        """Load the lists from the cache, or build (and cache) them.

        Args:
            trajectories: the reference data.
            cutoff: radius, Å (models' cutoff; edges beyond it contribute nothing anyway).
            cache_dir: where ``.npz`` files go; default ``$LONGMD_CACHE`` or ``~/.cache/longmd``,
                subfolder ``neighbors``.
            use_cache: False to neither read nor write the cache.
            progress: show a tqdm bar for large builds.
        """
        key = cache_key(trajectories, cutoff)
        folder = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "neighbors"
        path = folder / f"reference-neighbors-{key}.npz"
        if use_cache and path.is_file():
            loaded = _load(path, key)
            if loaded is not None:
                return loaded
        result = _build(trajectories, cutoff, key, progress)
        if use_cache:
            _save(result, path)
        return result


def _build(trajectories: Sequence[Trajectory], cutoff: float, key: str, progress: bool) -> ReferenceNeighbors:
    total = sum(len(t) for t in trajectories)
    bar = tqdm(
        total=total,
        desc=f"neighbour lists (cutoff {cutoff:g} Å)",
        unit="frame",
        disable=bars_disabled(progress and total >= PROGRESS_MIN_FRAMES),
    )
    ii, jj, ss, counts = [], [], [], []
    with bar:
        for traj in trajectories:
            for t in range(len(traj)):
                i, j, S = neighbor_list(traj.positions[t], traj.cell[t], traj.pbc, cutoff)
                ii.append(i.astype(np.int32))
                jj.append(j.astype(np.int32))
                ss.append(S)
                counts.append(len(i))
                bar.update()
    shifts = np.concatenate(ss) if ss else np.zeros((0, 3), dtype=np.int64)
    limit = int(np.abs(shifts).max(initial=0))
    dtype = next(d for d in (np.int8, np.int16, np.int32, np.int64) if limit <= np.iinfo(d).max)
    return ReferenceNeighbors(
        cutoff,
        np.concatenate(ii) if ii else np.zeros(0, np.int32),
        np.concatenate(jj) if jj else np.zeros(0, np.int32),
        shifts.astype(dtype),
        np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]),
        np.concatenate([[0], np.cumsum([len(t) for t in trajectories], dtype=np.int64)]),
        key,
    )


def _save(nl: ReferenceNeighbors, path: Path) -> None:
    """Write atomically (temporary file + rename) so a killed run never leaves a broken cache file."""
    arrays = {"key": np.array(nl.key), "cutoff": np.array(nl.cutoff), "i": nl.i, "j": nl.j, "shifts": nl.shifts,
              "offsets": nl.offsets, "frame_start": nl.frame_start}
    atomic_write(path, lambda fh: np.savez(fh, **arrays))


def _load(path: Path, key: str) -> ReferenceNeighbors | None:
    """The cached lists, or None if the file is unreadable or belongs to other data."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            return ReferenceNeighbors(
                float(z["cutoff"]), z["i"], z["j"], z["shifts"], z["offsets"], z["frame_start"], key
            )
    except Exception:  # a truncated or foreign file: rebuild
        return None
