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

from longmd.analysis.force_errors import combine_species
from longmd.data.trajectory import Trajectory, minimum_image
from longmd.data.windows import Window
from longmd.dynamics.cores import ForceField, evaluator_for
from longmd.dynamics.failures import Limits, check_replicas, per_system_any
from longmd.dynamics.neighbor_policy import VerletNeighbors
from longmd.dynamics.propagator import build_integrator
from longmd.dynamics.rollout import rollout_dropping_failures
from longmd.dynamics.state import MDState
from longmd.models.stride import StridePredictor
from longmd.progress import bars_disabled
from longmd.units import fs_to_ase_time


@dataclass
class ErrorSums:
    """The additive pieces of :class:`RolloutErrors`: sums over windows, so the sums of disjoint sets of
    windows (e.g. the shards of several processes) add up to those of their union.

    Attributes:
        abs_sum: (L, n_species) summed absolute force-component errors per step and species, eV/Å.
        counts: (n_species,) force components per step and species.
        dev_sum, dev_count: (L,) summed position deviations (Å) and the atoms they cover.
        mom_sum: (L,) summed momentum deviations |p_model - p_ref| (amu·Å/fs) of the same atoms.
        energy_sum, energy_count: (L,) summed |E_tot(predicted state) - E_tot(reference)| per atom (eV/atom) of
            a companion energy model, and the windows they cover (a stride predictor with a companion only).
        n_windows, failed: rollouts run and rollouts that blew up.
        window_abs_sum, window_counts: the same force sums of each window on its own ((L, n_species) and
            (n_species,) per window, in window order), for spreads over starts. They stay with the process
            that ran the windows (:meth:`to_vector` leaves them out).
    """

    abs_sum: np.ndarray
    counts: np.ndarray
    dev_sum: np.ndarray
    dev_count: np.ndarray
    mom_sum: np.ndarray
    energy_sum: np.ndarray
    energy_count: np.ndarray
    n_windows: int = 0
    failed: int = 0
    window_abs_sum: list[np.ndarray] = field(default_factory=list)
    window_counts: list[np.ndarray] = field(default_factory=list)

    @classmethod
    def zeros(cls, length: int, n_species: int) -> ErrorSums:
        return cls(np.zeros((length, n_species)), np.zeros(n_species), *(np.zeros(length) for _ in range(5)))

    def add_forces(self, forces: np.ndarray, ref: np.ndarray, numbers: np.ndarray, species: Sequence[int],
                   window: bool = False) -> None:
        """Add (L, N, 3) predicted vs reference forces of atoms ``numbers``; non-finite forces count 1e6.
        ``window``: they are one window's, kept on their own too (``window_abs_sum``, ``window_counts``)."""
        err = np.abs(np.nan_to_num(forces, nan=1e6, posinf=1e6, neginf=1e6) - ref).sum(-1)  # (L, N)
        abs_sum = np.stack([err[:, numbers == z].sum(1) for z in species], axis=1)
        counts = np.array([3.0 * np.sum(numbers == z) for z in species])
        self.abs_sum += abs_sum
        self.counts += counts
        if window:
            self.window_abs_sum.append(abs_sum)
            self.window_counts.append(counts)

    def to_vector(self) -> np.ndarray:
        """Everything in one float64 vector (for one all-reduce)."""
        return np.concatenate([self.abs_sum.ravel(), self.counts, self.dev_sum, self.dev_count, self.mom_sum,
                               self.energy_sum, self.energy_count, [self.n_windows, self.failed]]).astype(np.float64)

    def from_vector(self, vector: np.ndarray) -> ErrorSums:
        """Sums of this shape read from a :meth:`to_vector` vector."""
        length, n_species = self.abs_sum.shape
        cuts = np.cumsum([length * n_species, n_species, length, length, length, length, length])
        abs_sum, counts, dev_sum, dev_count, mom_sum, e_sum, e_count, tail = np.split(
            np.asarray(vector, dtype=np.float64), cuts)
        return ErrorSums(abs_sum.reshape(length, n_species), counts, dev_sum, dev_count, mom_sum, e_sum, e_count,
                         int(round(tail[0])), int(round(tail[1])))


@dataclass
class RolloutErrors:
    """Errors along rollouts, pooled over all windows.

    Attributes:
        species: atomic numbers, the order of the per-species columns.
        mepa: (L,) MEPA per step (per-species force MAEs combined by ``species_reduction``), eV/Å.
        per_species: (L, n_species) force-component MAE per step and species, eV/Å.
        position_deviation: (L,) mean |x_model - x_ref| per atom (minimum image), Å.
        momentum_deviation: (L,) mean |p_model - p_ref| per atom, amu·Å/fs.
        energy_deviation: (L,) mean |E_tot error| of the predicted states per atom (companion energy), eV/atom;
            NaN without a companion.
        n_windows: rollouts run; failed: rollouts that blew up (non-finite state or a force component above
            1e4 eV/Å); their remaining steps score an error of 1e6 eV/Å per component, and the position
            deviation averages over the rollouts still running. ``extra["failed_at_step"]``: when they failed.
        sums: the sums and counts everything above is formed from (add those of disjoint window sets, then
            :meth:`from_sums`, to pool them exactly).
    """

    species: list[int]
    mepa: np.ndarray
    per_species: np.ndarray
    position_deviation: np.ndarray
    momentum_deviation: np.ndarray
    energy_deviation: np.ndarray
    n_windows: int
    failed: int = 0
    species_reduction: str = "sum"
    extra: dict = field(default_factory=dict)
    sums: ErrorSums | None = None

    @classmethod
    def from_sums(
        cls, species: list[int], sums: ErrorSums, species_reduction: str = "sum", extra: dict | None = None
    ) -> RolloutErrors:
        """Per-species MAEs, MEPA and deviations of pooled sums."""
        per_species = sums.abs_sum / np.maximum(sums.counts, 1)
        present = torch.as_tensor(sums.counts > 0)
        combined = combine_species(torch.as_tensor(per_species), present, species_reduction).numpy()
        if not present.any():  # nothing scored forces (a stride predictor has none)
            per_species, combined = np.full_like(per_species, np.nan), np.full_like(combined, np.nan)
        return cls(
            species=species,
            mepa=combined,
            per_species=per_species,
            position_deviation=np.where(sums.dev_count > 0, sums.dev_sum / np.maximum(sums.dev_count, 1), np.nan),
            momentum_deviation=np.where(sums.dev_count > 0, sums.mom_sum / np.maximum(sums.dev_count, 1), np.nan),
            energy_deviation=np.where(sums.energy_count > 0, sums.energy_sum / np.maximum(sums.energy_count, 1),
                                      np.nan),
            n_windows=sums.n_windows,
            failed=sums.failed,
            species_reduction=species_reduction,
            extra=dict(extra or {}),
            sums=sums,
        )

    @property
    def mean_mepa(self) -> float:
        """MEPA averaged over the steps (the validation metric); inf if any rollout failed."""
        return math.inf if self.failed else float(np.mean(self.mepa))

    @property
    def mean_deviation(self) -> float:
        """Position deviation (Å) averaged over the steps after step 0; inf if any rollout failed."""
        return math.inf if self.failed else float(np.mean(self.position_deviation[1:]))

    @property
    def mean_momentum_deviation(self) -> float:
        """Momentum deviation (amu·Å/fs) averaged over the steps after step 0; inf if any rollout failed."""
        return math.inf if self.failed else float(np.mean(self.momentum_deviation[1:]))

    @property
    def mean_energy_deviation(self) -> float | None:
        """Energy error (eV/atom) of the predicted states after step 0, None without a companion; inf on failure."""
        if not self.sums or not self.sums.energy_count[1:].any():
            return None
        return math.inf if self.failed else float(np.mean(self.energy_deviation[1:]))

    def over_starts(self) -> dict | None:
        """Mean and spread of the per-window curves (each start scored on its own), or None without them.

        Returns ``{"n": W, "mepa": {"mean", "lo", "hi"} of (L,), "per_species": {"mean", "lo", "hi"} of
        (L, n_species)}``: the mean over the W starts and the 16th-84th percentile band across them
        (:func:`spread`). For windows of one composition the mean equals the pooled :attr:`mepa`.
        """
        curves = self.per_start()
        if curves is None:
            return None
        mepa, per_species = curves
        return {"n": len(mepa), "mepa": spread(mepa), "per_species": spread(per_species)}

    def per_start(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Each start scored on its own: MEPA (W, L) and per-species MAE (W, L, n_species; NaN for a species the
        start lacks), in window order; None without per-window sums. Paired comparisons of models on the same
        starts use these."""
        sums = self.sums
        if sums is None or not sums.window_abs_sum or not (np.asarray(sums.window_counts) > 0).any():
            return None
        per_species = np.stack([a / np.maximum(c, 1) for a, c in zip(sums.window_abs_sum, sums.window_counts)])
        present = [torch.as_tensor(c > 0) for c in sums.window_counts]
        mepa = np.stack([combine_species(torch.as_tensor(ps), p, self.species_reduction).numpy()
                         for ps, p in zip(per_species, present)])
        absent = ~np.asarray(sums.window_counts, dtype=bool)[:, None, :]  # a species a window lacks: not scored
        return mepa, np.where(absent, np.nan, per_species)

    def summary(self) -> dict:
        return {
            "mepa_mean": self.mean_mepa,
            "mepa_per_species_mean": {str(z): float(v) for z, v in zip(self.species, self.per_species.mean(0))},
            "position_deviation_final_A": float(self.position_deviation[-1]),
            "n_windows": self.n_windows,
            "failed": self.failed,
        }


BAND = (16.0, 84.0)
"""Percentiles of the band across starts (the central 68 %: mean ± 1 σ for a normal spread)."""


def spread(values: np.ndarray, band: tuple[float, float] = BAND) -> dict[str, np.ndarray]:
    """Mean and the ``band`` percentiles across the first axis (starts), ignoring NaN (a species a start lacks)."""
    v = np.asarray(values, dtype=np.float64)
    lo, hi = np.nanpercentile(v, band, axis=0)
    return {"mean": np.nanmean(v, axis=0), "lo": lo, "hi": hi}


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
    species: Sequence[int] | None = None,
    energy_model: nn.Module | None = None,
) -> RolloutErrors:
    """Run NVE rollouts of every window's length from its first frame and score them step by step.

    All windows must have the same length and their trajectories the same timestep. ``progress``: the
    label of a tqdm bar over all steps of all batches (None = no bar). ``species``: the per-species
    columns (default: the species of the windows); give the same list to shards whose sums are pooled.
    ``energy_model``: a companion potential scoring the total energy of a stride predictor's states.
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
    if species is None:
        species = sorted({int(z) for w in windows for z in trajectories[w.traj].numbers})
    species = list(species)
    sums = ErrorSums.zeros(length, len(species))
    sums.n_windows = len(windows)
    failed_at: list[int] = []
    n_batches = -(-len(windows) // batch_size)
    bar = tqdm(total=n_batches * (length - 1), desc=progress, disable=bars_disabled(progress is not None), leave=False,
               unit="step")
    for first in range(0, len(windows), batch_size):
        chunk = windows[first : first + batch_size]
        state = state_from_frames(trajectories, [(w.traj, w.start) for w in chunk], device, dtype)
        forces, positions, momenta, stops = _rollout_batch(model, state, length - 1, timestep, skin, bar)
        ref_f = np.concatenate([trajectories[w.traj].forces[w.start : w.stop] for w in chunk], axis=1)
        ref_x = np.concatenate([trajectories[w.traj].positions[w.start : w.stop] for w in chunk], axis=1)
        ref_p = np.concatenate([trajectories[w.traj].velocities[w.start : w.stop] * trajectories[w.traj].masses[:, None]
                                for w in chunk], axis=1)
        numbers = np.concatenate([trajectories[w.traj].numbers for w in chunk])
        sums.failed += len(stops)
        failed_at.extend(stops.values())
        if not isinstance(model, StridePredictor):
            offset = 0
            for w in chunk:
                atoms = slice(offset, offset + trajectories[w.traj].n_atoms)
                offset = atoms.stop
                sums.add_forces(forces[:, atoms], ref_f[:, atoms], numbers[atoms], species, window=True)
        dev = _deviation(positions, ref_x, chunk, trajectories)
        sums.dev_sum += np.nansum(dev, axis=1)
        sums.dev_count += np.isfinite(dev).sum(1)
        sums.mom_sum += np.nansum(np.linalg.norm(momenta - ref_p, axis=-1), axis=1) * fs_to_ase_time(1.0)
        if energy_model is not None:
            ref_e = np.stack([trajectories[w.traj].energy[w.start : w.stop] for w in chunk], axis=1)  # (L, B)
            ref_k = np.stack([0.5 * (ref_p[:, _atoms(chunk, trajectories, b)] ** 2
                                     / trajectories[w.traj].masses[:, None]).sum((1, 2)) for b, w in enumerate(chunk)],
                             axis=1)
            error = _total_energy_error(energy_model, state, positions, momenta, ref_e + ref_k, skin)
            sums.energy_sum += np.nansum(error, axis=1)
            sums.energy_count += np.isfinite(error).sum(1)
    bar.close()
    return RolloutErrors.from_sums(species, sums, species_reduction, extra={"failed_at_step": sorted(failed_at)})


def _atoms(chunk: Sequence[Window], trajectories: Sequence[Trajectory], b: int) -> slice:
    """The atoms of system b of a batch of windows."""
    first = sum(trajectories[w.traj].n_atoms for w in chunk[:b])
    return slice(first, first + trajectories[chunk[b].traj].n_atoms)


@torch.no_grad()
def _total_energy_error(energy_model: nn.Module, state: MDState, positions: np.ndarray, momenta: np.ndarray,
                        reference: np.ndarray, skin: float) -> np.ndarray:
    """(L, B) |E_pot + E_kin - reference| per atom of the states along a batch's rollout (NaN where it failed)."""
    n_atoms = state.atoms_per_system().cpu().numpy()
    out = np.full(reference.shape, np.nan)
    field = ForceField(energy_model, VerletNeighbors(energy_model.cutoff or 0.0, skin, isolate_nonfinite=True),
                       forces=False)
    for s in range(positions.shape[0]):
        x = torch.as_tensor(positions[s], dtype=state.dtype, device=state.device)
        p = torch.as_tensor(momenta[s], dtype=state.dtype, device=state.device)
        finite = torch.isfinite(x).all(-1) & torch.isfinite(p).all(-1)
        # a failed system is scored at the start positions (kept apart, finite) and reported as NaN
        at = state.replace(positions=torch.where(finite[:, None], x, state.positions),
                           momenta=torch.where(finite[:, None], p, state.momenta))
        e = (field(at).energy + at.kinetic_energy()).cpu().double().numpy()
        good = ~per_system_any(~finite, state.system, len(n_atoms)).cpu().numpy()
        out[s] = np.where(good, np.abs(e - reference[s]) / n_atoms, np.nan)
    return out


def _rollout_batch(
    model: nn.Module, state: MDState, n_steps: int, timestep_fs: float, skin: float, bar, max_force: float = 1e4
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, int]]:
    """Forces, positions and momenta (n_steps + 1, N, 3) of a batch of NVE rollouts, and {system: step it
    failed}.

    A system that fails the replica check (:func:`~longmd.dynamics.failures.check_replicas`: non-finite
    state, or a force component above ``max_force`` eV/Å) is dropped from the batch at that step (its later
    entries are NaN); the others go on (systems are independent, so they follow the trajectory they would
    follow alone). A blow-up therefore never reaches the neighbour search. A stride predictor has no forces:
    they stay NaN, positions are scored.
    """
    counts = state.atoms_per_system().cpu().numpy()
    first_atom = np.concatenate([[0], np.cumsum(counts)[:-1]])
    forces = np.full((n_steps + 1, state.n_atoms, 3), np.nan)
    positions = np.full_like(forces, np.nan)
    momenta = np.full_like(forces, np.nan)
    stops: dict[int, int] = {}
    shown = [0]  # steps shown on the bar (a step is seen twice when the survivors restart there)
    limits = Limits(min_distance=None, max_temperature_K=None, max_force=max_force)
    propagator = build_integrator(evaluator_for(model, VerletNeighbors(model.cutoff or 0.0, skin)), timestep_fs)

    def on_step(g: int, s: MDState, alive: list[int]) -> list[int]:
        bar.update(max(0, g - shown[0]))
        shown[0] = max(shown[0], g)
        bad = np.flatnonzero(check_replicas(s, limits)[0]).tolist()
        f = None if s.forces is None else s.forces.detach().cpu().double().numpy()
        x = s.positions.detach().cpu().double().numpy()
        p = s.momenta.detach().cpu().double().numpy()
        local = 0
        for k, b in enumerate(alive):
            n = int(counts[b])
            rows, atoms = slice(local, local + n), slice(first_atom[b], first_atom[b] + n)
            local += n
            if k in bad:
                stops[b] = g
                continue
            if f is not None:
                forces[g, atoms] = f[rows]
            positions[g, atoms] = x[rows]
            momenta[g, atoms] = p[rows]
        return bad

    rollout_dropping_failures(propagator, state, n_steps, on_step)
    bar.update(max(0, n_steps - shown[0]))  # steps the failed rollouts no longer run
    return forces, positions, momenta, stops


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
