"""Transport for diffusive systems (optional): MSD of one species from thermostatted runs at each temperature,
diffusion coefficient, Nernst-Einstein conductivity, Arrhenius fits extrapolated to 300 K; the reference's
MSD and D from the held-out trajectories at their own temperature."""

from __future__ import annotations

import numpy as np
from ase.data import atomic_masses, atomic_numbers
from torch import nn

from longmd.analysis.plots import plot_msd
from longmd.analysis.transport import arrhenius_fit, fit_diffusion, msd, nernst_einstein_conductivity
from longmd.data.trajectory import unwrap_positions
from longmd.dynamics.simulate import simulate
from longmd.evaluation.context import Context, symbol
from longmd.evaluation.parts.stability import read_runs, thin


def species_z(ctx: Context) -> int:
    """Atomic number of the diffusing species (option ``transport_species``; default the lightest present)."""
    s = ctx.opts.transport_species
    present = sorted({int(z) for t in ctx.held.indices for z in ctx.trajectories[t].numbers})
    if s is None:
        return min(present, key=lambda z: atomic_masses[z])
    z = int(s) if str(s).isdigit() else atomic_numbers.get(str(s))
    if z not in present:
        raise ValueError(f"transport species {s!r} is not in the held-out data ({[symbol(x) for x in present]})")
    return z


def _diffusion(positions: list[np.ndarray], mask: np.ndarray, dt_fs: float, n: int, volume: float, temp: float,
               charge: float) -> dict:
    """MSD averaged over runs (unwrapped positions (T, N, 3), same length), D and sigma."""
    curves = [msd(p, dt_fs, atoms=mask)[1] for p in positions]
    lag = np.arange(len(curves[0])) * dt_fs
    values = np.mean(curves, axis=0)
    fit = fit_diffusion(lag, values)
    sigma = nernst_einstein_conductivity(fit.diffusion_cm2_per_s, n, volume, temp, charge)
    return {"temperature_K": temp, "D_cm2_per_s": fit.diffusion_cm2_per_s,
            "D_stderr_cm2_per_s": fit.ols_stderr_cm2_per_s, "sigma_S_per_cm": sigma,
            "fit_window_fs": [fit.t_min_fs, fit.t_max_fs], "lag_fs": thin(lag), "msd_A2": thin(values)}, fit


def reference(ctx: Context) -> dict:
    z = species_z(ctx)
    runs = []
    for t in ctx.held.indices:
        tr, block = ctx.trajectories[t], ctx.held.block(t)
        runs.append(unwrap_positions(tr.positions[block], tr.cell[block[0]], tr.pbc))
    length = min(len(p) for p in runs)
    if length < 20:
        return {"species": symbol(z), "skipped": "held-out trajectories shorter than 20 frames"}
    tr = ctx.trajectories[ctx.held.indices[0]]
    mask = tr.numbers == z
    out, _ = _diffusion([p[:length] for p in runs], mask, ctx.timestep_fs, int(mask.sum()),
                        abs(float(np.linalg.det(tr.cell[0]))), ctx.reference_temperature_K, ctx.opts.charge)
    return {"species": symbol(z), **out}


def run(ctx: Context, name: str, model: nn.Module, entry: dict) -> dict:
    o = ctx.opts
    z = species_z(ctx)
    temps = [float(t) for t in o.temperatures] or [ctx.temperature_K]
    starts = ctx.run_starts
    per_t, plots = [], []
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
        pos = [unwrap_positions(runs[r]["positions"], tr.cell[f0], tr.pbc) for r in good]
        mask = tr.numbers == z
        dt = float(np.diff(runs[good[0]]["times_fs"][:2])[0])
        res, fit = _diffusion(pos, mask, dt, int(mask.sum()), abs(float(np.linalg.det(tr.cell[f0]))), temp, o.charge)
        res["runs"] = len(good)
        png = ctx.out / f"msd_{ctx.slug(name)}_{temp:g}K.png"
        path = plot_msd(np.asarray(res["lag_fs"]), np.asarray(res["msd_A2"]), png, fit=fit,
                        label=f"{name} {symbol(z)} {temp:g} K")
        per_t.append(res)
        plots.append(path.name)
    out: dict = {"species": symbol(z), "ensemble": o.transport_ensemble, "temperatures": per_t, "plots": plots}
    ok = [r for r in per_t if "D_cm2_per_s" in r and r["D_cm2_per_s"] > 0]
    if len(ok) >= 2:
        t = np.array([r["temperature_K"] for r in ok])
        d_fit = arrhenius_fit(t, np.array([r["D_cm2_per_s"] for r in ok]))
        s_fit = arrhenius_fit(t, np.array([r["sigma_S_per_cm"] for r in ok]), times_temperature=True)
        out["arrhenius"] = {"Ea_D_eV": d_fit.activation_energy_eV, "Ea_D_stderr_eV": d_fit.stderr_eV,
                            "D_300K_cm2_per_s": d_fit.predict(300.0), "Ea_sigma_eV": s_fit.activation_energy_eV,
                            "sigma_300K_S_per_cm": s_fit.predict(300.0)}
    return out
