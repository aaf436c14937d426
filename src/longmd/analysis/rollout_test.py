"""The rollout test of the DT paper: run the model's own NVE dynamics from reference frames and compare,
at every step, the model's forces on its own trajectory with the reference forces of that step.

The same function scores validation during training (fixed windows of ``val_length`` frames) and the
test rollouts of ``longmd evaluate`` (300 steps from held-out starts), so the two are comparable.
Neighbour lists follow the model's trajectory (Verlet lists with a skin): this is real MD, not replay.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from longmd.data.trajectory import Trajectory, minimum_image
from longmd.data.windows import Window
from longmd.dynamics.integrators import make_integrator
from longmd.dynamics.neighbor_policy import VerletNeighbors
from longmd.dynamics.rollout import rollout
from longmd.dynamics.state import MDState


@dataclass
class RolloutErrors:
    """Errors along rollouts, pooled over all windows.

    Attributes:
        species: atomic numbers, the order of the per-species columns.
        mepa: (L,) MEPA per step (per-species force MAEs combined by ``species_reduction``), eV/Å.
        per_species: (L, n_species) force-component MAE per step and species, eV/Å.
        position_deviation: (L,) mean |x_model - x_ref| per atom (minimum image), Å.
        n_windows: rollouts run; failed: rollouts that blew up (non-finite state or a force component above
            1e4 eV/Å); their remaining steps score an error of 1e6 eV/Å per component, and the position
            deviation averages over the rollouts still running. ``extra["failed_at_step"]``: when they failed.
    """

    species: list[int]
    mepa: np.ndarray
    per_species: np.ndarray
    position_deviation: np.ndarray
    n_windows: int
    failed: int = 0
    species_reduction: str = "sum"
    extra: dict = field(default_factory=dict)

    @property
    def mean_mepa(self) -> float:
        """MEPA averaged over the steps (the validation metric); inf if any rollout failed."""
        return math.inf if self.failed else float(np.mean(self.mepa))

    def summary(self) -> dict:
        return {
            "mepa_mean": self.mean_mepa,
            "mepa_per_species_mean": {str(z): float(v) for z, v in zip(self.species, self.per_species.mean(0))},
            "position_deviation_final_A": float(self.position_deviation[-1]),
            "n_windows": self.n_windows,
            "failed": self.failed,
        }


def state_from_frames(trajectories: Sequence[Trajectory], starts: Sequence[tuple[int, int]], device, dtype) -> MDState:
    """One batched MD state from (trajectory, frame) pairs: reference positions and momenta."""

    def cat(arrays):
        return torch.as_tensor(np.concatenate(arrays), device=device)

    trajs = [(trajectories[t], f) for t, f in starts]
    counts = [tr.n_atoms for tr, _ in trajs]
    return MDState(
        positions=cat([tr.positions[f] for tr, f in trajs]).to(dtype),
        momenta=cat([tr.velocities[f] * tr.masses[:, None] for tr, f in trajs]).to(dtype),
        masses=cat([tr.masses for tr, _ in trajs]).to(dtype),
        numbers=cat([tr.numbers for tr, _ in trajs]).long(),
        cell=torch.as_tensor(np.stack([tr.cell[f] for tr, f in trajs]), device=device, dtype=dtype),
        pbc=torch.as_tensor(np.stack([tr.pbc for tr, _ in trajs]), device=device),
        system=torch.repeat_interleave(torch.arange(len(trajs), device=device), torch.tensor(counts, device=device)),
    )


def rollout_errors(
    model: nn.Module,
    trajectories: Sequence[Trajectory],
    windows: Sequence[Window],
    batch_size: int = 64,
    species_reduction: str = "sum",
    skin: float = 1.0,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: str | None = None,
) -> RolloutErrors:
    """Run NVE rollouts of every window's length from its first frame and score them step by step.

    All windows must have the same length and their trajectories the same timestep. ``progress``: the
    label of a tqdm bar over all steps of all batches (None = no bar).
    """
    if not windows:
        raise ValueError("rollout_errors: no windows to roll out")
    length = windows[0].length
    if any(w.length != length for w in windows):
        raise ValueError("rollout_errors: windows must all have the same length")
    timesteps = {trajectories[w.traj].timestep_fs for w in windows}
    if len(timesteps) != 1:
        raise ValueError(f"rollout_errors: windows come from trajectories with different timesteps {timesteps}")
    timestep = timesteps.pop()
    species = sorted({int(z) for w in windows for z in trajectories[w.traj].numbers})
    abs_sum = np.zeros((length, len(species)))
    counts = np.zeros(len(species))
    dev_sum, dev_count = np.zeros(length), np.zeros(length)
    failed = 0
    failed_at: list[int] = []
    n_batches = -(-len(windows) // batch_size)
    bar = tqdm(total=n_batches * (length - 1), desc=progress, disable=progress is None, leave=False, unit="step")
    for first in range(0, len(windows), batch_size):
        chunk = windows[first : first + batch_size]
        state = state_from_frames(trajectories, [(w.traj, w.start) for w in chunk], device, dtype)
        forces, positions, stops = _rollout_batch(model, state, length - 1, timestep, skin, bar)
        ref_f = np.concatenate([trajectories[w.traj].forces[w.start : w.stop] for w in chunk], axis=1)
        ref_x = np.concatenate([trajectories[w.traj].positions[w.start : w.stop] for w in chunk], axis=1)
        numbers = np.concatenate([trajectories[w.traj].numbers for w in chunk])
        failed += len(stops)
        failed_at.extend(stops.values())
        err = np.abs(np.nan_to_num(forces, nan=1e6, posinf=1e6, neginf=1e6) - ref_f).sum(-1)  # (L, N)
        for k, z in enumerate(species):
            mask = numbers == z
            abs_sum[:, k] += err[:, mask].sum(1)
            counts[k] += 3 * mask.sum()
        dev = _deviation(positions, ref_x, chunk, trajectories)
        dev_sum += np.nansum(dev, axis=1)
        dev_count += np.isfinite(dev).sum(1)
    bar.close()
    per_species = abs_sum / np.maximum(counts, 1)
    present = counts > 0
    combined = per_species[:, present].sum(1)
    if species_reduction == "mean":
        combined = combined / present.sum()
    elif species_reduction != "sum":
        raise ValueError(f"species_reduction must be 'sum' or 'mean', got {species_reduction!r}")
    return RolloutErrors(
        species=species,
        mepa=combined,
        per_species=per_species,
        position_deviation=dev_sum / np.maximum(dev_count, 1),
        n_windows=len(windows),
        failed=failed,
        species_reduction=species_reduction,
        extra={"failed_at_step": sorted(failed_at)},
    )


def _rollout_batch(
    model: nn.Module, state: MDState, n_steps: int, timestep_fs: float, skin: float, bar, max_force: float = 1e4
) -> tuple[np.ndarray, np.ndarray, dict[int, int]]:
    """Forces and positions (n_steps + 1, N, 3) of a batch of NVE rollouts, and {system: step it failed}.

    A system whose positions, forces or energy turn non-finite, or whose largest force component exceeds
    ``max_force`` eV/Å, is dropped from the batch at that step (its later entries are NaN); the others go on
    (systems are independent, so they follow the trajectory they would follow alone). A blow-up therefore
    never reaches the neighbour search.
    """
    n_sys = state.n_systems
    counts = state.atoms_per_system().cpu().numpy()
    first_atom = np.concatenate([[0], np.cumsum(counts)[:-1]])
    forces = np.full((n_steps + 1, state.n_atoms, 3), np.nan)
    positions = np.full_like(forces, np.nan)
    alive = list(range(n_sys))
    integrator = make_integrator("nve", timestep_fs)
    neighbors = VerletNeighbors(model.cutoff, skin)
    stops: dict[int, int] = {}
    offset, resumed, bad = 0, False, []

    def on_step(step: int, s: MDState) -> bool | None:
        if step == 0 and resumed:
            return None  # stored at the end of the previous segment
        if step:
            bar.update(1)
        g = offset + step
        f = s.forces.detach().cpu().double().numpy()
        x = s.positions.detach().cpu().double().numpy()
        e = s.energy.detach().cpu().double().numpy()
        local = 0
        for k, b in enumerate(alive):
            n = int(counts[b])
            fb, xb = f[local : local + n], x[local : local + n]
            local += n
            if not (np.isfinite(fb).all() and np.isfinite(xb).all() and np.isfinite(e[k])) or (
                n and np.abs(fb).max() > max_force
            ):
                bad.append(k)
                stops[b] = g
                continue
            forces[g, first_atom[b] : first_atom[b] + n] = fb
            positions[g, first_atom[b] : first_atom[b] + n] = xb
        return False if bad else None

    while alive:
        bad.clear()
        result = rollout(model, state, n_steps - offset, integrator, neighbors, store=False, on_step=on_step)
        offset += result.steps_done
        resumed = True
        if not bad:
            break
        keep = [k for k in range(len(alive)) if k not in bad]
        alive = [alive[k] for k in keep]
        if not alive or offset >= n_steps:
            break
        state = result.state.select(keep)
        neighbors.reset()
    bar.update(max(0, n_steps - offset))  # steps the failed rollouts no longer run
    return forces, positions, stops


def _deviation(model_x: np.ndarray, ref_x: np.ndarray, chunk: Sequence[Window], trajectories) -> np.ndarray:
    """|x_model - x_ref| per step and atom, minimum image in the periodic directions."""
    out = []
    offset = 0
    for w in chunk:
        tr = trajectories[w.traj]
        n = tr.n_atoms
        delta = minimum_image(model_x[:, offset : offset + n] - ref_x[:, offset : offset + n], tr.cell[w.start], tr.pbc)
        out.append(np.linalg.norm(delta, axis=-1))
        offset += n
    return np.concatenate(out, axis=1)
