"""What ``simulate`` does at every step: the replica check, thermo rows, frames, checkpoints, stopped replicas."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np
import torch
from ase import Atoms
from tqdm.auto import tqdm

from longmd.dynamics.equipartition import species_temperatures
from longmd.dynamics.failures import REASONS, Limits, MinDistance, check_replicas
from longmd.dynamics.sim_checkpoint import frame_record
from longmd.dynamics.sim_outputs import Outputs, ThermoHistory
from longmd.dynamics.state import MDState

logger = logging.getLogger("longmd.dynamics.simulate")


@dataclass
class ReplicaStop:
    """Why and when a replica was stopped; ``frame`` is its last good frame (written to ``frame_path``)."""

    replica: int
    step: int
    time_fs: float
    reason: str
    message: str
    frame: Atoms
    frame_path: str | None = None


class Monitor:
    """``on_step`` of :func:`rollout_dropping_failures`: checks every replica, logs, writes frames, checkpoints.

    A replica that fails a check is stopped (:attr:`stopped`) with its last good frame and leaves the batch.
    """

    def __init__(self, min_distance: MinDistance | None, limits: Limits, outputs: Outputs, history: ThermoHistory,
                 bar, steps: int, timestep_fs: float, log_every: int, traj_every: int, com_removed: bool,
                 progress: bool, stopped: list[ReplicaStop], written_at: int | None = None,
                 checkpoint: Callable[[int, MDState, list[int]], None] | None = None,
                 checkpoint_every: int = 0, species: list[int] | None = None,
                 extras: tuple[str, ...] = ()) -> None:
        self.min_distance, self.limits, self.outputs, self.history, self.bar = (
            min_distance, limits, outputs, history, bar)
        self.steps, self.timestep_fs, self.log_every, self.traj_every = steps, timestep_fs, log_every, traj_every
        self.com_removed, self.progress, self.stopped = com_removed, progress, stopped
        self.written_at = written_at  # a resumed run: the outputs of this step are on disk already
        self.checkpoint, self.checkpoint_every = checkpoint, checkpoint_every
        self.last_good: MDState | None = None  # the previous step of the current batch
        self.species, self.extras = species, extras  # logged: temperature of each species, per-system extras

    def __call__(self, g: int, s: MDState, alive: list[int]) -> list[int]:
        d_min = None if self.min_distance is None else self.min_distance(s)
        stats = check_replicas(s, self.limits, d_min, self.com_removed)
        if stats[0].any():
            bad = np.flatnonzero(stats[0]).tolist()
            self.stopped += self._stop(g, s, stats, bad, alive)
            self.last_good = None  # the batch changes
            return bad
        self.last_good = s
        if g == self.written_at:
            return []
        t_fs = g * self.timestep_fs
        if g % self.log_every == 0 or g == self.steps:
            self.outputs.thermo(g, t_fs, alive, stats, self._extra_columns(s))
            e_pot, e_kin, temperature = stats[2:5]
            self.history.add(t_fs, alive, np.stack([e_pot, e_kin, e_pot + e_kin, temperature]))
            self.bar.set_postfix(T=f"{temperature.mean():.0f} K", alive=len(alive), refresh=False)
        if g % self.traj_every == 0 or g == self.steps:
            self.outputs.frames(g, t_fs, alive, s)
        if self.checkpoint is not None and self.checkpoint_every and g % self.checkpoint_every == 0 and g > 0:
            self.checkpoint(g, s, alive)
        self.bar.update(g - self.bar.n)
        return []

    def _extra_columns(self, s: MDState) -> np.ndarray | None:
        """(columns, B): the temperature of every species, then the per-system extras (NaN where missing)."""
        rows = []
        if self.species:
            rows.append(species_temperatures(s.detach(), self.species).T)
        for name in self.extras:
            value = s.per_system.get(name)
            rows.append((value if value is not None else s.kinetic_energy().new_full((s.n_systems,), float("nan")))
                        .detach()[None])
        return torch.cat(rows).to("cpu", torch.float64).numpy() if rows else None

    def _stop(self, g: int, bad_state: MDState, stats: np.ndarray, bad: list[int],
              alive: list[int]) -> list[ReplicaStop]:
        """Stop the replicas at positions ``bad`` of the batch (replica ``alive[b]``), each with its last good
        frame."""
        good = self.last_good
        frames = (good if good is not None else bad_state).select(bad).to_atoms()
        first = "the initial frame" if g == 0 else f"step {g}"
        kept = f"step {g - 1}" if good is not None else f"{first} (not good)"  # the first frame failed
        stops = []
        for b, frame in zip(bad, frames, strict=True):
            r, code = alive[b], int(stats[0, b])
            t_fs = g * self.timestep_fs
            message = (f"replica {r} stopped at step {g} (t = {t_fs:g} fs): "
                       f"{self.limits.message(code, stats, b)}; kept {kept}")
            path = self.outputs.stopped(r, frame)
            message += f" -> {path}" if path else ""
            logger.warning(message)
            if self.progress:
                tqdm.write(message)
            stops.append(ReplicaStop(r, g, t_fs, REASONS[code], message, frame, path))
        return stops


def stop_record(stop: ReplicaStop) -> dict:
    """A stopped replica as plain data and tensors for a checkpoint."""
    return {**{f.name: getattr(stop, f.name) for f in fields(stop)}, "frame": frame_record(stop.frame)}
