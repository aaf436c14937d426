"""Energy drift in NVE and speed of every model under the same protocol (same system, replicas, dtype)."""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from longmd.analysis.drift import ns_per_day, steps_per_second
from longmd.dynamics.cores import ForceField
from longmd.dynamics.neighbor_policy import VerletNeighbors
from longmd.dynamics.propagator import build_integrator
from longmd.dynamics.rollout import rollout
from longmd.dynamics.simulate import simulate
from longmd.evaluation.context import Context
from longmd.evaluation.parts.stability import _drift, read_runs


def drift(ctx: Context, name: str, model: nn.Module, entry: dict) -> dict:
    """From the NVE stability runs when they ran, else from a dedicated NVE run of ``drift_steps``."""
    stab = entry.get("stability")
    if stab and stab.get("ensemble") == "nve":
        runs = [r for r in stab["runs"] if r.get("drift_meV_per_atom_per_ps") is not None]
        source = "stability runs"
    else:
        o = ctx.opts
        out_dir = ctx.out / "runs" / ctx.slug(name) / "drift"
        t, f = ctx.run_starts[0]
        simulate(model, ctx.state([(t, f)], ctx.dtype(model)), o.drift_steps, timestep_fs=ctx.timestep_fs,
                 out_dir=out_dir, log_every=o.record_every, traj_every=max(o.drift_steps, 1), device=o.device,
                 dtype=ctx.dtype(model), skin=o.skin, init_velocities="given", min_distance=o.min_distance_A,
                 max_temperature_K=ctx.max_temperature_K, progress=o.progress)
        thermo = read_runs(out_dir, 1)[0]["thermo"]
        runs = [{"time_fs": float(thermo[-1, 0]), **_drift(thermo, ctx.trajectories[t].n_atoms, "nve")}
                for _ in range(1) if len(thermo) >= 2]
        source = f"NVE run of {o.drift_steps} steps"
    if not runs:
        return {"source": source, "drift_meV_per_atom_per_ps": None, "note": "no run lasted two logged frames"}
    drifts = [r["drift_meV_per_atom_per_ps"] for r in runs]
    return {
        "source": source,
        "drift_meV_per_atom_per_ps": float(np.mean(drifts)),
        "drift_abs_max_meV_per_atom_per_ps": float(np.max(np.abs(drifts))),
        "max_energy_deviation_meV_per_atom": float(max(r["max_energy_deviation_meV_per_atom"] for r in runs)),
        "per_run": drifts,
        "duration_fs": [r["time_fs"] for r in runs],
        "energy_curve": runs[0]["energy_curve"],
    }


def speed(ctx: Context, name: str, model: nn.Module, entry: dict) -> dict:
    """Steps/s and ns/day of plain NVE steps (Verlet lists, no checks, nothing stored) after a warm-up."""
    o = ctx.opts
    dtype = ctx.dtype(model)
    state = ctx.state([ctx.run_starts[0]] * max(1, o.speed_replicas), dtype)
    # A blown-up model's non-finite positions are searched as far-apart atoms (no pairs), so the timed steps
    # need no check (a check reads the device: a GPU would wait for it); their result is checked once after.
    neighbors = VerletNeighbors(model.cutoff, o.skin, isolate_nonfinite=True)
    integrator = build_integrator(ForceField(model, neighbors), ctx.timestep_fs)

    def finite(step: int, s) -> bool:  # warm-up only: a blown-up model is not timed
        return bool(torch.isfinite(s.forces).all())

    state = rollout(integrator, state, o.speed_warmup, store=False, on_step=finite).state
    if not finite(0, state):
        return {"steps": 0, "steps_per_s": None, "ns_per_day": None, "note": "non-finite forces: not timed"}
    _sync(state.device)
    start = time.perf_counter()
    done = o.speed_steps
    try:
        state = rollout(integrator, state, done, store=False).state
    except Exception as exc:  # e.g. an ASE calculator handed the NaN positions of a blown-up run
        return {"steps": 0, "steps_per_s": None, "ns_per_day": None,
                "note": f"failed during the {done} timed steps ({type(exc).__name__}: {exc})"}
    _sync(state.device)
    wall = time.perf_counter() - start
    if not bool(torch.isfinite(state.positions + state.momenta + state.forces).all()):
        return {"steps": 0, "steps_per_s": None, "ns_per_day": None,
                "note": f"non-finite state after the {done} timed steps"}
    sps = steps_per_second(done, wall)
    return {
        "steps": done,
        "replicas": state.n_systems,
        "atoms": state.n_atoms,
        "timed_s": wall,
        "steps_per_s": sps,
        "ns_per_day": ns_per_day(sps, ctx.timestep_fs),  # of each replica
        "ns_per_day_all_replicas": ns_per_day(sps, ctx.timestep_fs) * state.n_systems,
        "atom_steps_per_s": sps * state.n_atoms,
        "timestep_fs": ctx.timestep_fs,
        "device": str(state.device),
        "dtype": str(dtype).removeprefix("torch."),
        "torch_threads": torch.get_num_threads(),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
