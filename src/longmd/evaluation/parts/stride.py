"""Evaluation of a stride predictor (its parts replace the potential's, which need forces):

- ``errors``: position and momentum deviations stride by stride from held-out frames (the reference read every
  stride), next to the same for velocity Verlet with the companion potential at the stride as its timestep (the
  baseline a long step breaks);
- ``energy``: NVE with the learned stride, with and without the energy filter: the companion's total energy
  against time (drift, largest deviation) and when and why a run stopped;
- ``temperature``: Langevin and SVR around the learned stride: the mean temperature of every species against the
  target (equipartition; FlashMD's Table 1);
- ``structure``: Langevin runs of the learned stride (both filters) and two independent velocity-Verlet runs with
  the companion at the reference timestep, from the same start, sampled every stride: h(r), RDF and per-species
  MSD of the predictor against the first velocity-Verlet run, with the second's scores as the noise floor;
- ``speed``: wall time per simulated ps against velocity Verlet with the companion at the reference timestep.

Without a companion (``EvalOptions.companion``) only the errors and the thermostatted runs are measured.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from longmd.analysis.rollout_test import rollout_errors
from longmd.analysis.transport import msd
from longmd.data.strides import subsampled
from longmd.data.windows import Window
from longmd.dynamics.cores import ForceField, evaluator_for
from longmd.dynamics.equipartition import species_temperatures
from longmd.dynamics.failures import REASONS, Limits, check_replicas
from longmd.dynamics.neighbor_policy import VerletNeighbors
from longmd.dynamics.propagator import build_integrator
from longmd.dynamics.rollout import rollout
from longmd.dynamics.state import MDState
from longmd.evaluation.context import Context, symbol
from longmd.evaluation.parts.stability import (
    FLOOR_FACTOR,
    normalization,
    structure_of,
    structure_scores,
    thin,
    within_noise,
)
from longmd.models.stride import StridePredictor
from longmd.training.stride_setup import stride_frames


def run(ctx: Context, name: str, model: StridePredictor, entry: dict, companion: nn.Module | None) -> dict:
    k = stride_frames(float(model.timestep_fs), ctx.timestep_fs)
    out = {"stride_fs": float(model.timestep_fs), "stride_frames": k, "errors": errors(ctx, model, companion, k)}
    if companion is not None:
        out["energy"] = {label: energy_run(ctx, model, companion, filters)
                         for label, filters in (("filtered", ["com", "energy"]), ("unfiltered", ["com"]))}
        out["structure"] = structure(ctx, model, companion, k)
        out["speed"] = speed(ctx, model, companion)
    out["temperature"] = {ensemble: thermostat_run(ctx, model, companion, ensemble) for ensemble in ("langevin", "svr")}
    return out


def _stride_windows(ctx: Context, k: int, strides: int) -> tuple[list, list[Window]]:
    """The held-out rollout starts, each on the trajectory of its offset read every k frames."""
    derived, index, windows = [], {}, []
    for w in ctx.windows:
        key = (w.traj, w.start % k)
        if key not in index:
            index[key] = len(derived)
            derived.append(subsampled(ctx.trajectories[w.traj], k, w.start % k))
        windows.append(Window(index[key], w.start // k, strides + 1))
    length = min(len(derived[w.traj]) - w.start for w in windows)
    if length < 2:
        raise ValueError(f"the held-out rollouts hold no stride of {k} frames")
    return derived, [Window(w.traj, w.start, min(w.length, length)) for w in windows]


def errors(ctx: Context, model: StridePredictor, companion: nn.Module | None, k: int) -> dict:
    o = ctx.opts
    derived, windows = _stride_windows(ctx, k, o.stride_steps)
    out = {"strides": windows[0].length - 1, "starts": len(windows)}
    for label, m in (("predictor", model), ("velocity_verlet", companion)):
        if m is None:
            continue
        e = rollout_errors(m, derived, windows, batch_size=o.batch_size, skin=o.skin, device=ctx.device,
                           dtype=ctx.dtype(model), progress=ctx.progress(f"stride errors {label}"),
                           energy_model=companion if label == "predictor" else None)
        out[label] = {"position_deviation_A": e.position_deviation.tolist(),
                      "momentum_deviation_amu_A_per_fs": e.momentum_deviation.tolist(),
                      "energy_deviation_eV_per_atom": e.energy_deviation.tolist(),
                      "failed": e.failed, "failed_at_stride": e.extra.get("failed_at_step", [])}
    return out


def _integrator(ctx: Context, model: StridePredictor, companion: nn.Module | None, filters: list[str],
                ensemble: str = "nve"):
    o = ctx.opts
    neighbors = VerletNeighbors(model.cutoff or o.min_distance_A, o.skin, isolate_nonfinite=True)
    energy = None if companion is None else ForceField(
        companion, VerletNeighbors(companion.cutoff, o.skin, isolate_nonfinite=True), forces=False)
    return build_integrator(evaluator_for(model, neighbors), float(model.timestep_fs), ensemble, ctx.temperature_K,
                            o.friction_per_fs, o.tau_fs, seed=o.seed, device=ctx.device, filters=filters,
                            energy_model=energy), energy


def energy_run(ctx: Context, model: StridePredictor, companion: nn.Module, filters: list[str]) -> dict:
    """NVE over ``stride_run_strides`` strides from the first held-out start; E_tot of the companion each stride."""
    o = ctx.opts
    propagator, energy = _integrator(ctx, model, companion, filters)
    state = ctx.state([ctx.run_starts[0]], ctx.dtype(model))
    totals = []

    def total_energy(_step: int, s) -> None:
        e = s.energy if s.energy is not None else energy(s.detach()).energy
        totals.append(float((e + s.kinetic_energy())[0]))

    stop = _stride_stop(_watched_run(ctx, propagator, state, o.stride_run_strides, True, total_energy))
    n_atoms = state.n_atoms
    t_ps = np.arange(len(totals)) * float(model.timestep_fs) / 1000.0
    e = (np.asarray(totals) - totals[0]) * 1000.0 / n_atoms
    drift = float(np.polyfit(t_ps, e, 1)[0]) if len(e) >= 2 else None
    return {"filters": filters, "strides_run": len(totals) - 1, "stopped": stop,
            "drift_meV_per_atom_per_ps": drift, "max_deviation_meV_per_atom": float(np.abs(e).max()),
            "energy_curve": {"time_fs": (t_ps * 1000.0).tolist(), "delta_meV_per_atom": e.tolist()}}


def thermostat_run(ctx: Context, model: StridePredictor, companion: nn.Module | None, ensemble: str) -> dict:
    """Mean temperature of every species over the second half of ``stride_run_strides`` thermostatted strides."""
    o = ctx.opts
    filters = ["com"] + (["energy"] if companion is not None else [])
    propagator, _ = _integrator(ctx, model, companion, filters, ensemble)
    state = ctx.state([ctx.run_starts[0]], ctx.dtype(model))
    species = sorted({int(z) for z in state.numbers.tolist()})
    samples, n = [], o.stride_run_strides

    def temperatures(step: int, s) -> None:
        if step >= n // 2:
            samples.append(species_temperatures(s.detach(), species)[0].cpu().numpy())

    stop = _stride_stop(_watched_run(ctx, propagator, state, n, ensemble == "svr", temperatures))
    means = np.mean(samples, axis=0) if samples else np.full(len(species), np.nan)
    target = ctx.temperature_K
    return {"target_K": target, "filters": filters, "stopped": stop, "samples": len(samples),
            "species_K": {symbol(z): float(t) for z, t in zip(species, means, strict=True)},
            "largest_deviation_percent": float(np.nanmax(np.abs(means / target - 1.0)) * 100.0) if samples else None}


def _watched_run(ctx: Context, propagator, state, steps: int, com_removed: bool,
                 sample: Callable[[int, MDState], None]) -> dict | None:
    """One replica for ``steps`` propagator steps, ``sample(step, state)`` after each good one, stopped by the first
    failed check (NaN, atoms too close, too hot): ``{"step", "reason"}``, or None when it ran through."""
    limits = Limits(ctx.opts.min_distance_A, ctx.max_temperature_K)
    stop = None

    def on_step(step: int, s: MDState) -> bool:
        nonlocal stop
        code = int(check_replicas(s, limits, com_removed=com_removed)[0, 0])
        if code:
            stop = {"step": step, "reason": REASONS[code]}
            return False
        sample(step, s)
        return True

    with torch.no_grad():
        rollout(propagator, state, steps, store=False, on_step=on_step)
    return stop


def _stride_stop(stop: dict | None) -> dict | None:
    """A stop of a run of learned strides, counted in strides."""
    return None if stop is None else {"stride": stop["step"], "reason": stop["reason"]}


def _sampled_run(ctx: Context, propagator, state, steps: int, every: int) -> dict:
    """Positions (T, N, 3) every ``every`` steps of one replica's run, and when and why it stopped (None: stable)."""
    frames = []

    def positions(step: int, s: MDState) -> None:
        if step % every == 0:
            frames.append(s.positions.detach().cpu().double().numpy())

    stop = _watched_run(ctx, propagator, state, steps, False, positions)
    return {"positions": np.stack(frames), "stopped": stop}


def _msd_per_species(positions: np.ndarray, numbers: np.ndarray, stride_fs: float) -> dict:
    """MSD (Å²) per species against lag (all time origins, lags up to half the run)."""
    out = {}
    for z in sorted({int(x) for x in numbers}):
        t, m = msd(positions, stride_fs, atoms=numbers == z, max_lag=max(1, len(positions) // 2))
        out[symbol(z)] = {"lag_fs": thin(t), "msd_A2": thin(m), "final_A2": float(m[-1])}
    return out


def structure(ctx: Context, model: StridePredictor, companion: nn.Module, k: int) -> dict:
    """h(r), RDF and MSD of Langevin runs over ``stride_run_strides`` strides: the predictor (com + energy filters)
    against velocity Verlet with the companion; a second velocity-Verlet run (another noise seed) is the floor."""
    o = ctx.opts
    start, dtype = [ctx.run_starts[0]], ctx.dtype(model)
    learned, _ = _integrator(ctx, model, companion, ["com", "energy"], "langevin")
    runs = {"predictor": _sampled_run(ctx, learned, ctx.state(start, dtype), o.stride_run_strides, 1)}
    for r in (1, 2):
        vv = build_integrator(ForceField(companion, VerletNeighbors(companion.cutoff, o.skin, isolate_nonfinite=True)),
                              ctx.timestep_fs, "langevin", ctx.temperature_K, o.friction_per_fs, o.tau_fs,
                              seed=o.seed + r, device=ctx.device)
        runs[f"velocity_verlet_{r}"] = _sampled_run(ctx, vv, ctx.state(start, dtype), o.stride_run_strides * k, k)
    t, f = start[0]
    tr = ctx.trajectories[t]
    stride_fs = float(model.timestep_fs)
    sets = {label: [(run["positions"][len(run["positions"]) // 2:], tr.numbers, tr.cell[f], tr.pbc)]
            for label, run in runs.items()}
    norm = normalization(sets["velocity_verlet_1"])
    shapes = {label: structure_of(x, ctx, norm) for label, x in sets.items()}
    reference = shapes["velocity_verlet_1"]
    scores = {label: structure_scores(shapes[label], reference) for label in ("predictor", "velocity_verlet_2")}
    motion = {label: _msd_per_species(run["positions"], tr.numbers, stride_fs) for label, run in runs.items()}
    msd_ok = {z: bool(abs(m["final_A2"] - motion["velocity_verlet_1"][z]["final_A2"])
                      <= FLOOR_FACTOR * abs(motion["velocity_verlet_2"][z]["final_A2"]
                                            - motion["velocity_verlet_1"][z]["final_A2"]))
              for z, m in motion["predictor"].items()}
    return {
        "temperature_K": ctx.temperature_K, "strides": o.stride_run_strides, "stride_fs": stride_fs,
        "stopped": {label: run["stopped"] for label, run in runs.items()},
        "scores": scores["predictor"], "noise_floor": scores["velocity_verlet_2"],
        "within_noise": within_noise(scores["predictor"], scores["velocity_verlet_2"]),
        "msd": motion, "msd_within_noise": msd_ok,
        "curves": {label: {"r": x["r"], "h": x["h"], "g": x["g"]} for label, x in shapes.items()},
        "rdf_normalization": norm,
    }


def seconds_per_ps(propagator, state, steps: int) -> float:
    """Wall seconds per simulated ps of ``steps`` propagator steps after a 2-step warm-up."""
    with torch.no_grad():
        s = propagator.init(state)
        for _ in range(2):  # warm-up
            s = propagator(s)
        start = time.perf_counter()
        for _ in range(steps):
            s = propagator(s)
        float(s.positions.sum())  # wait for the device
    return (time.perf_counter() - start) / (steps * propagator.timestep_fs / 1000.0)


def speed(ctx: Context, model: StridePredictor, companion: nn.Module) -> dict:
    """Wall seconds per simulated ps: the predictor with both filters vs velocity Verlet with the companion."""
    o = ctx.opts
    state = ctx.state([ctx.run_starts[0]], ctx.dtype(model))
    learned, _ = _integrator(ctx, model, companion, ["com", "energy"])
    vv = build_integrator(ForceField(companion, VerletNeighbors(companion.cutoff, o.skin)), ctx.timestep_fs)
    n = max(1, o.speed_steps)
    per_ps_learned = seconds_per_ps(learned, state, n)
    per_ps_vv = seconds_per_ps(vv, state, n)
    return {"s_per_ps_predictor": per_ps_learned, "s_per_ps_velocity_verlet": per_ps_vv,
            "speedup": per_ps_vv / per_ps_learned, "timed_steps": n}
