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
        n_windows: rollouts run; failed: windows whose rollout produced non-finite forces.
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
) -> RolloutErrors:
    """Run NVE rollouts of every window's length from its first frame and score them step by step.

    All windows must have the same length and their trajectories the same timestep.
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
    deviation = np.zeros(length)
    n_atoms_total = 0
    failed = 0
    for first in range(0, len(windows), batch_size):
        chunk = windows[first : first + batch_size]
        state = state_from_frames(trajectories, [(w.traj, w.start) for w in chunk], device, dtype)
        result = rollout(
            model,
            state,
            length - 1,
            make_integrator("nve", timestep),
            VerletNeighbors(model.cutoff, skin),
            gradient="none",
        )
        forces = torch.stack(result.forces).detach().cpu().double().numpy()  # (L, N, 3)
        positions = torch.stack(result.positions).detach().cpu().double().numpy()
        ref_f = np.concatenate([trajectories[w.traj].forces[w.start : w.stop] for w in chunk], axis=1)
        ref_x = np.concatenate([trajectories[w.traj].positions[w.start : w.stop] for w in chunk], axis=1)
        numbers = np.concatenate([trajectories[w.traj].numbers for w in chunk])
        bad = ~np.isfinite(forces).all(axis=(0, 2))
        if bad.any():
            failed += len({int(s) for s in state.system.cpu().numpy()[bad]})
        err = np.abs(np.nan_to_num(forces, nan=1e6, posinf=1e6, neginf=1e6) - ref_f).sum(-1)  # (L, N)
        for k, z in enumerate(species):
            mask = numbers == z
            abs_sum[:, k] += err[:, mask].sum(1)
            counts[k] += 3 * mask.sum()
        deviation += _deviation(positions, ref_x, chunk, trajectories).sum(1)
        n_atoms_total += len(numbers)
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
        position_deviation=deviation / n_atoms_total,
        n_windows=len(windows),
        failed=failed,
        species_reduction=species_reduction,
    )


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
