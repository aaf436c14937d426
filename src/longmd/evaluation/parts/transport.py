"""Transport for diffusive systems (optional; kinisi, ``pip install 'longmd[transport]'``): tracer D of one
species with its uncertainty, Nernst-Einstein conductivity and an Arrhenius fit extrapolated to 300 K, for the
reference (held-out trajectories grouped by temperature, each group's runs pooled) and for every model (thermostatted
runs at the same temperatures, their replicas pooled); MSD and Arrhenius plots, and the GraNNField study's
-log10 sigma table (its Table 2)."""

from __future__ import annotations

import numpy as np
from torch import nn

from longmd.analysis.plots import plot_arrhenius, plot_msd
from longmd.analysis.transport import Diffusivity, arrhenius, arrhenius_summary, diffusivity
from longmd.dynamics.simulate import simulate
from longmd.evaluation.context import Context, symbol
from longmd.evaluation.parts.stability import mobile_species as species_z
from longmd.evaluation.parts.stability import read_runs

GROUP_TOLERANCE = 0.05  # held-out trajectories whose mean temperatures differ by less than this fraction group


def temperature_groups(ctx: Context) -> dict[float, list[int]]:
    """Held-out trajectories by temperature: those whose mean temperatures lie within 5 % of each other form one
    group, labelled by its mean temperature, or by the nearest of ``temperatures`` when that is within 5 % (the
    thermostat's target, where the data's mean is a few K off)."""
    means = {t: float(np.mean(ctx.held.temperatures(t))) for t in ctx.held.indices}
    clusters: list[list[int]] = []
    for t in sorted(means, key=means.get):
        if clusters and means[t] - means[clusters[-1][0]] <= GROUP_TOLERANCE * means[clusters[-1][0]]:
            clusters[-1].append(t)
        else:
            clusters.append([t])
    groups = {}
    for c in clusters:
        mean = float(np.mean([means[t] for t in c]))
        near = [float(g) for g in ctx.opts.temperatures if abs(float(g) - mean) <= GROUP_TOLERANCE * float(g)]
        groups[near[0] if near else round(mean, 1)] = c
    return groups


def same_temperature(a: float, b: float) -> bool:
    return abs(a - b) <= GROUP_TOLERANCE * max(a, b)


def _table_row(per_t: list[dict], arr: dict | None) -> dict:
    """-log10 sigma (mean, std) at every temperature and at 300 K: one row of the paper's Table 2."""
    row = {f"{x['temperature_K']:g}": [x["minus_log10_sigma"]["mean"], x["minus_log10_sigma"]["std"]]
           for x in per_t if "minus_log10_sigma" in x}
    if arr:
        row[f"{arr['extrapolated_K']:g}"] = [arr["minus_log10_sigma"]["mean"], arr["minus_log10_sigma"]["std"]]
    return row


def _arrhenius(ds: list[Diffusivity], ctx: Context) -> dict | None:
    ok = [d for d in ds if d.mean_cm2_per_s > 0]
    if len({d.temperature_K for d in ok}) < 2:
        return None
    fit = arrhenius(ok, n_samples=ctx.opts.transport_samples, seed=ctx.opts.seed)
    out = arrhenius_summary(fit, ok[0].n_carriers, float(np.mean([d.volume_A3 for d in ok])), ctx.opts.charge)
    t = np.linspace(300.0, max(d.temperature_K for d in ok), 40)
    out["line"] = {"temperature_K": t.tolist(), "D_cm2_per_s": fit.predict(t).tolist()}
    return out


def reference(ctx: Context) -> dict:
    z = species_z(ctx)
    o = ctx.opts
    per_t, ds = [], []
    for temp, members in temperature_groups(ctx).items():
        blocks = {t: ctx.held.block(t) for t in members}
        runs = [ctx.trajectories[t].positions[b] for t, b in blocks.items()]
        if min(len(r) for r in runs) < 20:
            per_t.append({"temperature_K": temp, "skipped": "held-out trajectories shorter than 20 frames"})
            continue
        tr = ctx.trajectories[members[0]]
        d = diffusivity(runs, tr.numbers, tr.cell[blocks[members[0]][0]], ctx.timestep_fs, temp, species=z,
                        start_fs=o.transport_start_fs, n_samples=o.transport_samples, seed=o.seed)
        ds.append(d)
        per_t.append({**d.summary(o.charge), "trajectories": [ctx.trajectories[t].name for t in members]})
    arr = _arrhenius(ds, ctx)
    return {"species": symbol(z), "temperatures": per_t, "arrhenius": arr, "table": _table_row(per_t, arr)}


def run(ctx: Context, name: str, model: nn.Module, entry: dict) -> dict:
    o = ctx.opts
    z = species_z(ctx)
    ref = ctx.reference.get("transport") or {}
    temps = [float(t) for t in o.temperatures] or [x["temperature_K"] for x in ref.get("temperatures", [])]
    starts = ctx.run_starts
    per_t, ds, plots = [], [], []
    for k, temp in enumerate(temps):
        out_dir = ctx.out / "runs" / ctx.slug(name) / f"transport_{temp:g}K"
        result = simulate(
            model, ctx.state(starts, ctx.dtype(model)), o.transport_steps, timestep_fs=ctx.timestep_fs,
            ensemble=o.transport_ensemble, temperature_K=temp, out_dir=out_dir, log_every=o.record_every,
            traj_every=o.record_every, seed=o.seed + k, device=o.device, dtype=ctx.dtype(model),
            friction_per_fs=o.friction_per_fs, tau_fs=o.tau_fs, skin=o.skin, init_velocities="maxwell-boltzmann",
            min_distance=o.min_distance_A, max_temperature_K=max(ctx.max_temperature_K, 3 * temp), progress=o.progress,
        )
        stopped = {s.replica for s in result.stopped}
        runs = read_runs(out_dir, len(starts))
        good = [r for r in range(len(starts)) if r not in stopped]
        if not good:
            per_t.append({"temperature_K": temp, "failed": "every run blew up"})
            continue
        t0, f0 = starts[good[0]]
        tr = ctx.trajectories[t0]
        times = runs[good[0]]["times_fs"]
        keep = times >= times[0] + o.transport_discard_fs
        if keep.sum() < 7:
            per_t.append({"temperature_K": temp, "skipped": f"{keep.sum()} frames left after transport_discard_fs "
                          f"= {o.transport_discard_fs:g} fs of the {times[-1] - times[0]:g} fs run: raise "
                          "transport_steps"})
            continue
        dt = float(np.diff(times[:2])[0])
        d = diffusivity([runs[r]["positions"][keep] for r in good], tr.numbers, tr.cell[f0], dt, temp, species=z,
                        start_fs=o.transport_start_fs, n_samples=o.transport_samples, seed=o.seed)
        ds.append(d)
        per_t.append({**d.summary(o.charge), "runs_blew_up": len(starts) - len(good)})
        curves = {name: (d.lag_fs, d.msd_A2, d.msd_std_A2)}
        same = [x for x in ref.get("temperatures", []) if same_temperature(x["temperature_K"], temp) and "msd_A2" in x]
        if same:
            curves["reference"] = (same[0]["lag_fs"], same[0]["msd_A2"], same[0]["msd_std_A2"])
        png = ctx.out / f"msd_{ctx.slug(name)}_{temp:g}K.png"
        plots.append(plot_msd(curves, png, start_fs=d.start_fs, title=f"{symbol(z)} MSD at {temp:g} K").name)
    arr = _arrhenius(ds, ctx)
    series, fits = {}, {}
    for label, rows, fit in ((name, per_t, arr), ("reference", ref.get("temperatures", []), ref.get("arrhenius"))):
        rows = [x for x in rows if "D_cm2_per_s" in x]
        if rows:
            series[label] = tuple(np.array(v) for v in zip(*[(x["temperature_K"], x["D_cm2_per_s"]["mean"],
                                                              x["D_cm2_per_s"]["std"]) for x in rows]))
        if fit:
            fits[label] = (fit["line"]["temperature_K"], fit["line"]["D_cm2_per_s"])
    if series:
        png = ctx.out / f"arrhenius_{ctx.slug(name)}.png"
        plots.append(plot_arrhenius(series, png, fits=fits, quantity=f"D({symbol(z)}) (cm²/s)").name)
    return {"species": symbol(z), "ensemble": o.transport_ensemble, "temperatures": per_t, "arrhenius": arr,
            "table": _table_row(per_t, arr), "plots": plots}
