"""Long-run stability and structure: M runs from held-out starts (``simulate``), stability time and reason,
h(r) and RDFs of the final frames against the reference, tracked pair distances and event counts.

The ensemble is NVE by default: each run continues a reference trajectory from its first frame with the
reference momenta, so model and reference can be compared frame by frame at first and statistically later,
and no thermostat hides heating (NVE runs also give the energy drift). ``ensemble: langevin | svr`` runs at
the reference mean temperature instead.
"""

from __future__ import annotations

import csv
from pathlib import Path

import ase.io
import numpy as np
from torch import nn

from longmd.analysis.drift import energy_drift, max_energy_deviation
from longmd.analysis.stability import VerdictLimits, count_events, peak_shifts, stability_verdict, tracked_distances
from longmd.analysis.structure import (
    bonds,
    distance_histogram,
    histogram_l1,
    histogram_mae,
    is_bulk,
    partial_rdfs,
    rdf,
    rdf_mae,
)
from longmd.analysis.transport import msd
from longmd.data.trajectory import unwrap_positions
from longmd.dynamics.simulate import simulate
from longmd.evaluation.context import Context, symbol

MAX_POINTS = 1000  # stored points per curve in metrics.json
FLOOR_FACTOR = 2.0  # a structure score within this many noise floors counts as "within noise"
SCORES = ("hr_mae", "hr_l1", "rdf_mae")


def thin(values: np.ndarray, max_points: int = MAX_POINTS) -> list:
    """Every k-th point so at most ``max_points`` remain (curves stored in metrics.json)."""
    v = np.asarray(values)
    step = max(1, -(-len(v) // max_points))
    return v[::step].tolist()


def read_runs(out_dir: Path, n_runs: int) -> list[dict[str, np.ndarray]]:
    """Frames (times, positions) and thermo rows of every replica that ``simulate`` wrote to ``out_dir``."""
    runs = [{"thermo": []} for _ in range(n_runs)]
    for r in range(n_runs):
        path = out_dir / f"traj_{r:03d}.traj"
        frames = ase.io.read(path, ":") if path.stat().st_size else []  # empty: failed at the first frame
        runs[r]["times_fs"] = np.array([a.info["time_fs"] for a in frames])
        runs[r]["positions"] = np.stack([a.positions for a in frames]) if frames else np.zeros((0, 0, 3))
    with open(out_dir / "thermo.csv") as f:
        rows = list(csv.reader(f))[1:]  # step, time_fs, replica, E_pot, E_kin, E_tot, T (simulate's column order)
    for row in rows:
        runs[int(row[2])]["thermo"].append([float(x) for x in row[1:2] + row[3:7]])
    for run in runs:
        run["thermo"] = np.asarray(run["thermo"]).reshape(-1, 5)
    return runs


def _final(frames: np.ndarray, fraction: float) -> np.ndarray:
    return frames[len(frames) - max(1, int(round(fraction * len(frames)))) :]


def normalization(sets: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]) -> str:
    """How the RDFs of this evaluation are normalised, decided once from the reference's sets so every model is
    scored on the same curve: ``"bulk"`` g(r) when every set is bulk, else the ``"pair_density"`` n(r)."""
    return "bulk" if all(is_bulk(pos, cell, pbc) for pos, _, cell, pbc in sets) else "pair_density"


def structure_of(sets: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], ctx: Context, norm: str) -> dict:
    """h(r), g(r) and partial g_ab(r) (or the pair densities n(r), by ``norm``) averaged over (positions (T, N, 3),
    numbers, cell, pbc) sets, by frames."""
    o = ctx.opts
    weights = np.array([len(p) for p, *_ in sets], dtype=float)
    weights /= weights.sum()
    h = g = None
    partial: dict[str, np.ndarray] = {}
    skipped: dict[str, int] = {}
    bonding: dict[str, dict] = {}
    for w, (pos, numbers, cell, pbc) in zip(weights, sets):
        for key, b in bonds(pos, numbers, cell, pbc).items():
            into = bonding.setdefault(key, {"coordination": 0.0, "min_distance_A": None, "cutoff_A": b["cutoff_A"]})
            into["coordination"] += w * b["coordination"]
            if b["min_distance_A"] is not None:
                old = into["min_distance_A"]
                into["min_distance_A"] = b["min_distance_A"] if old is None else min(old, b["min_distance_A"])
        r, hk = distance_histogram(pos, cell, pbc, o.r_max, o.n_bins)
        _, gk = rdf(pos, cell, pbc, o.r_max, o.n_bins, normalization=norm)
        _, parts = partial_rdfs(pos, numbers, cell, pbc, o.r_max, o.n_bins, normalization=norm)
        h = w * hk if h is None else h + w * hk
        g = w * gk if g is None else g + w * gk
        for (a, b), v in parts.items():
            key = f"{symbol(a)}-{symbol(b)}"
            n_pairs = pair_count(numbers, a, b)
            if n_pairs < MIN_PAIRS:
                skipped[key] = n_pairs
                continue
            partial[key] = partial.get(key, 0.0) + w * v
    return {"r": r.tolist(), "h": h.tolist(), "g": g.tolist(), "partial": {k: v.tolist() for k, v in partial.items()},
            "partial_skipped": skipped, "rdf_normalization": norm, "bonds": bonding}


MIN_PAIRS = 3
"""Partial RDFs of species pairs with fewer atom pairs per frame are skipped (and listed): g(r) of H-H in a
system with two H atoms is one distance's histogram, scaled by the cell's density, not a structure."""


def pair_count(numbers: np.ndarray, a: int, b: int) -> int:
    """Distinct atom pairs of species a and b in one frame."""
    n_a, n_b = int(np.sum(numbers == a)), int(np.sum(numbers == b))
    return n_a * (n_a - 1) // 2 if a == b else n_a * n_b


def structure_scores(structure: dict, ref: dict) -> dict:
    """h(r)-MAE, h(r) L1, RDF-MAE and partial RDF-MAEs of one structure against another."""
    return {
        "hr_mae": histogram_mae(structure["h"], ref["h"]),
        "hr_l1": histogram_l1(structure["h"], ref["h"], np.asarray(ref["r"])),
        "rdf_mae": rdf_mae(structure["g"], ref["g"]),
        "rdf_mae_partial": {k: rdf_mae(v, ref["partial"][k]) for k, v in structure["partial"].items()
                            if k in ref["partial"]},
        "coordination_difference": {k: b["coordination"] - ref["bonds"][k]["coordination"]
                                    for k, b in structure.get("bonds", {}).items() if k in ref.get("bonds", {})},
    }


def _halves(sets: list) -> tuple[list, list] | None:
    """Two independent reference samples: alternate trajectories when there are two or more, else the two
    halves of the one trajectory's frames (None with a single frame)."""
    if len(sets) >= 2:
        return sets[0::2], sets[1::2]
    pos, *rest = sets[0]
    k = len(pos) // 2
    return ([(pos[:k], *rest)], [(pos[k:], *rest)]) if k else None


def noise_floor(sets: list, ctx: Context, norm: str) -> dict | None:
    """The structure scores between two independent reference samples: what an exact model scores."""
    halves = _halves(sets)
    if halves is None:
        return None
    return structure_scores(structure_of(halves[0], ctx, norm), structure_of(halves[1], ctx, norm))


def within_noise(scores: dict, floor: dict | None) -> dict | None:
    """Per score: True when it is at most ``FLOOR_FACTOR`` x the reference's own noise floor."""
    if floor is None:
        return None
    return {k: bool(scores[k] <= FLOOR_FACTOR * floor[k]) for k in SCORES if scores.get(k) is not None}


def _tracked(ctx: Context, series: list[tuple[np.ndarray, np.ndarray]], cells, pbcs) -> list[dict]:
    """Per tracked pair: distances of every series (times, positions), event counts and rates."""
    out = []
    for p in ctx.tracked:
        per = []
        for (times, pos), cell, pbc in zip(series, cells, pbcs):
            d = tracked_distances(pos, [(p.i, p.j)], cell, pbc)[:, 0]
            events = 0 if p.threshold_A is None else count_events(
                d, p.threshold_A, ctx.opts.event_min_fs, times_fs=times)
            per.append({"events": events, "duration_fs": float(times[-1] - times[0]), "mean_A": float(np.mean(d)),
                        "max_A": float(np.max(d)), "final_A": float(d[-1]),
                        "times_fs": thin(times - times[0]), "distance_A": thin(d)})
        total_ps = sum(x["duration_fs"] for x in per) / 1000.0
        out.append({"label": p.label, "i": p.i, "j": p.j, "threshold_A": p.threshold_A,
                    "events": sum(x["events"] for x in per),
                    "events_per_ps": sum(x["events"] for x in per) / total_ps if total_ps > 0 else None,
                    "runs": per})
    return out


def mobile_species(ctx: Context) -> int:
    """Atomic number of the mobile species (option ``transport_species``; default the lightest present)."""
    from ase.data import atomic_masses, atomic_numbers

    s = ctx.opts.transport_species
    present = sorted({int(z) for t in ctx.held.indices for z in ctx.trajectories[t].numbers})
    if s is None:
        return min(present, key=lambda z: atomic_masses[z])
    z = int(s) if str(s).isdigit() else atomic_numbers.get(str(s))
    if z not in present:
        raise ValueError(f"transport species {s!r} is not in the held-out data ({[symbol(x) for x in present]})")
    return z


def framework_msd(series: list[tuple[np.ndarray, np.ndarray]], numbers: list[np.ndarray], cells, pbcs,
                  mobile: int) -> dict | None:
    """MSD (Å^2) of every atom but the mobile species against lag time (fs), averaged over the runs (cut to the
    shortest), for the framework-melting check; None when all atoms are mobile or a run has < 2 frames."""
    length = min(len(pos) for _, pos in series)
    if length < 2 or all(np.all(n == mobile) for n in numbers):
        return None
    curves = []
    for (times, pos), n, cell, pbc in zip(series, numbers, cells, pbcs):
        interval = float(times[1] - times[0])
        lag, m = msd(unwrap_positions(pos[:length], cell, pbc), interval, atoms=n != mobile)
        curves.append(m)
    return {"lag_fs": thin(lag), "msd_A2": thin(np.mean(curves, axis=0))}


def at_lag(curve: dict | None, lag_fs: float) -> float | None:
    """A stored MSD curve at ``lag_fs`` (linear interpolation; None beyond its longest lag)."""
    if curve is None or lag_fs > curve["lag_fs"][-1]:
        return None
    return float(np.interp(lag_fs, curve["lag_fs"], curve["msd_A2"]))


def verdict(ctx: Context, per_run: list[dict], structure: dict, scores: dict, fw: dict | None) -> dict:
    """Stable / unstable with the failure modes named (:func:`longmd.analysis.stability.stability_verdict`), against
    the reference's structure and framework MSD; the framework MSDs compared at half the shorter of the two curves'
    longest lags (many time origins there, and long enough for a melting framework to drift off)."""
    o = ctx.opts
    ref = ctx.reference["stability"]
    fw_ref = ref.get("framework_msd")
    lag = 0.5 * min(fw["lag_fs"][-1], fw_ref["lag_fs"][-1]) if fw and fw_ref else None
    out = stability_verdict(
        scores.get("rdf_mae"), [f"run {r}: {x['reason']}" for r, x in enumerate(per_run) if not x["stable"]],
        {k: b["min_distance_A"] for k, b in structure["bonds"].items()},
        {k: b["min_distance_A"] for k, b in ref["structure"]["bonds"].items()},
        peak_shifts(np.asarray(structure["r"]), {k: np.asarray(v) for k, v in structure["partial"].items()},
                    {k: np.asarray(v) for k, v in ref["structure"]["partial"].items()}),
        at_lag(fw, lag) if lag else None, at_lag(fw_ref, lag) if lag else None,
        VerdictLimits(rdf_mae=o.rdf_mae_threshold, peak_shift_A=o.peak_shift_A))
    floor = (ref.get("noise_floor") or {}).get("rdf_mae")
    return {**out, "rdf_mae_noise_floor": floor, "framework_msd_lag_fs": lag}


def reference(ctx: Context) -> dict:
    """The reference's structure (final frames of the held-out trajectories), tracked distances and framework MSD."""
    held, dt = ctx.held, ctx.timestep_fs
    sets = []
    for t, frames in held.final_frames(ctx.opts.final_fraction):
        tr = ctx.trajectories[t]
        sets.append((tr.positions[frames], tr.numbers, tr.cell[frames[0]], tr.pbc))
    series, cells, pbcs = [], [], []
    for t in held.indices:
        tr, block = ctx.trajectories[t], held.block(t)
        series.append((block * dt, tr.positions[block]))
        cells.append(tr.cell[block[0]])
        pbcs.append(tr.pbc)
    norm = normalization(sets)
    numbers = [ctx.trajectories[t].numbers for t in held.indices]
    return {
        "structure": structure_of(sets, ctx, norm),
        "noise_floor": noise_floor(sets, ctx, norm),
        "tracked": _tracked(ctx, series, cells, pbcs),
        "mobile_species": symbol(mobile_species(ctx)),
        "framework_msd": framework_msd(series, numbers, cells, pbcs, mobile_species(ctx)),
        "temperature_mean_K": ctx.reference_temperature_K,
        "trajectories": [ctx.trajectories[t].name for t in held.indices],
    }


def run(ctx: Context, name: str, model: nn.Module, entry: dict) -> dict:
    o = ctx.opts
    starts = ctx.run_starts
    out_dir = ctx.out / "runs" / ctx.slug(name) / "stability"
    thermostat = o.ensemble != "nve"
    result = simulate(
        model, ctx.state(starts, ctx.dtype(model)), o.long_steps, timestep_fs=ctx.timestep_fs, ensemble=o.ensemble,
        temperature_K=ctx.temperature_K if thermostat else None, out_dir=out_dir, log_every=o.record_every,
        traj_every=o.record_every, seed=o.seed, device=o.device, dtype=ctx.dtype(model),
        friction_per_fs=o.friction_per_fs, tau_fs=o.tau_fs, skin=o.skin, init_velocities="given",
        min_distance=o.min_distance_A, max_temperature_K=ctx.max_temperature_K, progress=o.progress,
    )
    stops = {s.replica: s for s in result.stopped}
    runs = read_runs(out_dir, len(starts))
    per_run, sets, series, cells, pbcs, numbers = [], [], [], [], [], []
    for r, ((t, f), run_) in enumerate(zip(starts, runs)):
        tr = ctx.trajectories[t]
        stop = stops.get(r)
        per_run.append({
            "start": [tr.name, f],
            "stable": stop is None,
            "time_fs": stop.time_fs if stop else o.long_steps * ctx.timestep_fs,
            "reason": stop.reason if stop else "stable",
            "message": stop.message if stop else "",
            **_drift(run_["thermo"], tr.n_atoms, o.ensemble),
        })
        if len(run_["positions"]) == 0:
            continue  # no good frame at all
        sets.append((_final(run_["positions"], o.final_fraction), tr.numbers, tr.cell[f], tr.pbc))
        series.append((run_["times_fs"], run_["positions"]))
        cells.append(tr.cell[f])
        pbcs.append(tr.pbc)
        numbers.append(tr.numbers)
    ref = ctx.reference["stability"]["structure"]
    floor = ctx.reference["stability"].get("noise_floor")
    times = [x["time_fs"] for x in per_run]
    if not sets:
        return {"ensemble": o.ensemble, "steps": o.long_steps, "stable_runs": 0, "n_runs": len(per_run),
                "stability_time_mean_fs": float(np.mean(times)), "stability_time_min_fs": float(np.min(times)),
                "hr_mae": None, "hr_l1": None, "rdf_mae": None, "runs": per_run, "structure": None, "tracked": [],
                "max_temperature_K": ctx.max_temperature_K,
                "verdict": {"stable": False, "failure_modes": ["blew up"], "evidence": {"blew up": "no good frame"}}}
    structure = structure_of(sets, ctx, ref.get("rdf_normalization", "bulk"))
    scores = structure_scores(structure, ref)
    fw = framework_msd(series, numbers, cells, pbcs, mobile_species(ctx))
    return {
        "ensemble": o.ensemble,
        "temperature_K": ctx.temperature_K if thermostat else None,
        "max_temperature_K": ctx.max_temperature_K,
        "steps": o.long_steps,
        "stable_runs": sum(x["stable"] for x in per_run),
        "n_runs": len(per_run),
        "stability_time_mean_fs": float(np.mean(times)),
        "stability_time_min_fs": float(np.min(times)),
        **scores,
        "noise_floor": floor,
        "within_noise": within_noise(scores, floor),
        "verdict": verdict(ctx, per_run, structure, scores, fw),
        "framework_msd": fw,
        "runs": per_run,
        "structure": structure,
        "tracked": _tracked(ctx, series, cells, pbcs),
        "files": str(out_dir.relative_to(ctx.out)),
        "steps_per_s": result.steps_per_s,
    }


def _drift(thermo: np.ndarray, n_atoms: int, ensemble: str) -> dict:
    """NVE energy drift and largest deviation of one run's thermo rows (time, E_pot, E_kin, E_tot, T)."""
    out = {"temperature_mean_K": float(np.mean(thermo[:, 4])) if len(thermo) else None}
    if ensemble == "nve" and len(thermo) >= 2:
        out["drift_meV_per_atom_per_ps"] = energy_drift(thermo[:, 0], thermo[:, 3], n_atoms)
        out["max_energy_deviation_meV_per_atom"] = max_energy_deviation(thermo[:, 3], n_atoms)
        out["energy_curve"] = {"times_fs": thin(thermo[:, 0]),
                               "dE_meV_per_atom": thin((thermo[:, 3] - thermo[0, 3]) * 1000.0 / n_atoms)}
    return out
