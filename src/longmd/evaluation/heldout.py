"""Which reference data is held out, and the seeded choice of start frames and tracked atom pairs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase.data import chemical_symbols

from longmd.analysis.stability import tracked_distances
from longmd.data.splits import Split
from longmd.data.trajectory import Trajectory
from longmd.data.windows import Window, make_windows
from longmd.evaluation.options import TrackedPair
from longmd.units import KB_EV_PER_K


@dataclass
class HeldOut:
    """Reference trajectories and, for each held-out one, its allowed (sorted) frame indices."""

    trajectories: list[Trajectory]
    frames: dict[int, np.ndarray]

    @classmethod
    def select(cls, trajectories: Sequence[Trajectory], test: Split | Sequence[int] | None = None) -> HeldOut:
        """``test``: a Split (its ``test`` subset), trajectory indices, or None (all data is held out)."""
        trajectories = list(trajectories)
        if not trajectories:
            raise ValueError("evaluate: no reference trajectories")
        if isinstance(test, Split):
            test.check(trajectories)
            chosen = test.subsets.get("test", {})
            if not chosen:
                raise ValueError("the split holds no test trajectories (train with data.test_fraction > 0)")
            frames = {t: np.arange(len(trajectories[t])) if f is None else np.asarray(f) for t, f in chosen.items()}
        else:
            idx = range(len(trajectories)) if test is None else [int(t) for t in test]
            for t in idx:
                if not 0 <= t < len(trajectories):
                    raise ValueError(f"test trajectory {t} out of range (0..{len(trajectories) - 1})")
            frames = {t: np.arange(len(trajectories[t])) for t in idx}
        frames = {t: np.sort(f) for t, f in sorted(frames.items()) if len(f)}
        if not frames:
            raise ValueError("evaluate: no held-out frames")
        timesteps = {trajectories[t].timestep_fs for t in frames}
        if len(timesteps) != 1:
            raise ValueError(f"held-out trajectories have different timesteps {sorted(timesteps)} fs; evaluate apart")
        return cls(trajectories, frames)

    @property
    def indices(self) -> list[int]:
        return list(self.frames)

    @property
    def timestep_fs(self) -> float:
        return self.trajectories[self.indices[0]].timestep_fs

    def blocks(self, t: int) -> list[np.ndarray]:
        """Contiguous runs of allowed frames of trajectory ``t``."""
        f = self.frames[t]
        return np.split(f, np.flatnonzero(np.diff(f) != 1) + 1)

    def block(self, t: int) -> np.ndarray:
        """The longest contiguous run of allowed frames of trajectory ``t``."""
        return max(self.blocks(t), key=len)

    def common_numbers(self) -> np.ndarray | None:
        """Atomic numbers shared by every held-out trajectory (same atoms, same order), else None."""
        first = self.trajectories[self.indices[0]].numbers
        same = all(np.array_equal(self.trajectories[t].numbers, first) for t in self.indices)
        return first if same else None

    def temperatures(self, t: int) -> np.ndarray:
        """Instantaneous temperature (K) of the allowed frames of trajectory ``t``, in the centre-of-mass frame
        (dof = 3N - 3), as :meth:`MDState.temperature` measures it."""
        tr = self.trajectories[t]
        f = self.frames[t]
        v = tr.velocities[f]
        v = v - np.einsum("i,tij->tj", tr.masses, v)[:, None, :] / tr.masses.sum()
        kin = 0.5 * np.einsum("i,tij->t", tr.masses, v**2)
        return 2.0 * kin / (max(3 * tr.n_atoms - 3, 1) * KB_EV_PER_K)

    def rollout_windows(self, steps: int, n_starts: int | None, seed: int) -> list[Window]:
        """``n_starts`` windows of ``steps + 1`` frames (default one per test trajectory, round robin), seeded.

        ``steps`` is capped so that every held-out trajectory holds such a window.
        """
        length = min(steps + 1, min(len(self.block(t)) for t in self.indices))
        if length < 2:
            raise ValueError("held-out trajectories are too short for a rollout (need 2 consecutive frames)")
        rng = np.random.default_rng(seed)
        per_traj = {}
        for t in self.indices:
            starts = [w.start for w in make_windows([len(self.trajectories[t])], length, frames=[self.frames[t]])]
            per_traj[t] = [Window(t, int(s), length) for s in rng.permutation(starts)]
        n = len(self.indices) if n_starts is None else int(n_starts)
        if n < 1:
            raise ValueError(f"need at least one rollout start, got {n}")
        out = []
        for k in range(n):
            t = self.indices[k % len(self.indices)]
            choices = per_traj[t]
            out.append(choices[(k // len(self.indices)) % len(choices)])
        return sorted(out)

    def run_starts(self, n_runs: int, seed: int) -> list[tuple[int, int]]:
        """Starts of long runs: the first held-out frame of each test trajectory, then seeded random frames."""
        rng = np.random.default_rng(seed + 1)
        out = []
        for r in range(n_runs):
            t = self.indices[r % len(self.indices)]
            block = self.block(t)
            out.append((t, int(block[0]) if r < len(self.indices) else int(rng.choice(block))))
        return out

    def final_frames(self, fraction: float) -> list[tuple[int, np.ndarray]]:
        """The last ``fraction`` of each held-out trajectory's longest block (at least one frame)."""
        out = []
        for t in self.indices:
            block = self.block(t)
            out.append((t, block[len(block) - max(1, int(round(fraction * len(block)))) :]))
        return out


def auto_track(held: HeldOut) -> list[TrackedPair]:
    """Default tracked pairs (same atoms in every held-out trajectory required).

    - a species with exactly 2 atoms (e.g. H2): that pair; event threshold = 2 x its 10th-percentile
      distance in the reference (H2: about 1.5 Å, dissociation);
    - the smallest species with 3..12 atoms that is not the most abundant (e.g. a Pd6 cluster): among its
      bonded pairs at the start (within 1.3 x the shortest), the one whose distance grows the most along the
      reference; event threshold = 1.25 x its starting distance (cluster isomerisation).
    """
    numbers = held.common_numbers()
    if numbers is None:
        return []
    species, counts = np.unique(numbers, return_counts=True)
    pairs: list[TrackedPair] = []
    for z in species[counts == 2]:
        i, j = (int(a) for a in np.flatnonzero(numbers == z))
        d = np.concatenate([x[:, 0] for x in _pair_distances(held, [(i, j)])])
        sym = chemical_symbols[int(z)]
        pairs.append(TrackedPair(i, j, round(float(2.0 * np.percentile(d, 10)), 3), f"{sym}{i}-{sym}{j}"))
    cluster = [(c, z) for z, c in zip(species, counts) if 3 <= c <= 12 and c < counts.max()]
    if cluster:
        z = min(cluster)[1]
        atoms = np.flatnonzero(numbers == z)
        candidates = [(int(a), int(b)) for k, a in enumerate(atoms) for b in atoms[k + 1 :]]
        d = _pair_distances(held, candidates)  # per trajectory (T, P)
        start = np.median([x[0] for x in d], axis=0)
        growth = np.max([x.max(0) - x[0] for x in d], axis=0)
        bonded = np.flatnonzero(start <= 1.3 * start.min())
        k = int(bonded[np.argmax(growth[bonded])])
        (i, j), sym = candidates[k], chemical_symbols[int(z)]
        pairs.append(TrackedPair(i, j, round(1.25 * float(start[k]), 3), f"{sym}{i}-{sym}{j}"))
    return pairs


def _pair_distances(held: HeldOut, pairs: list[tuple[int, int]]) -> list[np.ndarray]:
    """(T, P) distances of the pairs along every held-out trajectory's longest block."""
    out = []
    for t in held.indices:
        tr = held.trajectories[t]
        f = held.block(t)
        out.append(tracked_distances(tr.positions[f], pairs, tr.cell[f], tr.pbc))
    return out


def trained_on(model_spec: str, trajectories: Sequence[Trajectory]) -> tuple[Path, list[str]] | None:
    """The trajectories of ``trajectories`` a model was trained or validated on, from the ``split.json`` of the
    run directory that holds its file (None when there is none or it was made for other data)."""
    path = Path(model_spec).parent / "split.json"
    if ":" in model_spec.split("/")[0] or not path.is_file():
        return None
    try:
        split = Split.load(path)
        split.check(list(trajectories))
    except (ValueError, KeyError, OSError):
        return None
    used = sorted(set(split.subsets.get("train", {})) | set(split.subsets.get("val", {})))
    return path, [trajectories[t].name for t in used]
