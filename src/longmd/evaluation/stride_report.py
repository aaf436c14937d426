"""The report section and plots of stride predictors (:mod:`longmd.evaluation.parts.stride`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from longmd.evaluation.report import _f, _table, plot_xy


def stride_plots(name: str, slug: str, result: dict, out: Path) -> list[str]:
    """``stride_errors_<model>.png`` (and ``stride_energy_<model>.png`` with a companion); file names."""
    errors, stride = result["errors"], result["stride_fs"]
    curves = {}
    for label in ("predictor", "velocity_verlet"):
        if label in errors:
            dq = np.asarray(errors[label]["position_deviation_A"], dtype=float)
            shown = name if label == "predictor" else f"velocity Verlet at {stride:g} fs (companion)"
            curves[shown] = (np.arange(len(dq)) * stride, dq)
    files = [f"stride_errors_{slug}.png"]
    plot_xy(curves, out / files[0], f"{name}: position deviation from the reference", "time (fs)",
            "mean |Δx| per atom (Å)")
    if result.get("energy"):
        energy = {f"{label} ({'+'.join(e['filters'])})": (e["energy_curve"]["time_fs"],
                                                          e["energy_curve"]["delta_meV_per_atom"])
                  for label, e in result["energy"].items()}
        files.append(f"stride_energy_{slug}.png")
        plot_xy(energy, out / files[1], f"{name}: NVE, companion's total energy", "time (fs)",
                "E_tot - E_tot(0) (meV/atom)", hline=0.0)
    shape = result.get("structure")
    if shape:
        labels = {"predictor": name, "velocity_verlet_1": "reference: velocity Verlet (companion)",
                  "velocity_verlet_2": "velocity Verlet, another seed"}
        key = "g" if shape["rdf_normalization"] == "bulk" else "h"
        files.append(f"stride_rdf_{slug}.png")
        plot_xy({labels[k]: (c["r"], c[key]) for k, c in shape["curves"].items()}, out / files[-1],
                f"{name}: Langevin at {shape['temperature_K']:g} K, second half", "r (Å)",
                "g(r)" if key == "g" else "h(r) (pairs per Å per atom)")
        files.append(f"stride_msd_{slug}.png")
        plot_xy({f"{labels[k]}, {z}": (m["lag_fs"], m["msd_A2"]) for k, per in shape["msd"].items()
                 for z, m in per.items()}, out / files[-1], f"{name}: mean squared displacement (Langevin)",
                "lag (fs)", "MSD (Å²)")
    return files


def stride_section(metrics: dict) -> list[str]:
    rows = [(n, m["stride"]) for n, m in metrics["models"].items() if "stride" in m]
    if not rows:
        return []
    lines = ["", "## Stride predictors", "",
             "Errors stride by stride from held-out frames (mean |Δx| per atom, Å; |Δp| amu·Å/fs), next to velocity "
             "Verlet with the companion potential at the stride as its timestep. Energy: NVE with and without the "
             "energy filter (companion's E_tot). Temperatures: mean over the second half of thermostatted runs, per "
             "species (equipartition). Plots: `stride_errors_*.png`, `stride_energy_*.png`.", ""]
    table = []
    for n, r in rows:
        e = r["errors"]
        for label in ("predictor", "velocity_verlet"):
            if label in e:
                x = e[label]
                table.append([n, label.replace("_", " "), _f(r["stride_fs"]), _f(x["position_deviation_A"][1]),
                              _f(x["position_deviation_A"][-1]), _f(x["momentum_deviation_amu_A_per_fs"][-1]),
                              f"{x['failed']}/{e['starts']}"])
    last = f"|Δx| {rows[0][1]['errors']['strides']} strides (Å)"
    lines += _table(["model", "propagator", "stride (fs)", "|Δx| 1 stride (Å)", last, "|Δp| last (amu·Å/fs)",
                     "blew up"], table)
    energy = [[n, label, _f(e["drift_meV_per_atom_per_ps"]), _f(e["max_deviation_meV_per_atom"]),
               str(e["strides_run"]), "—" if not e["stopped"] else e["stopped"]["reason"]]
              for n, r in rows for label, e in (r.get("energy") or {}).items()]
    if energy:
        lines += [""] + _table(["model", "NVE run", "drift (meV/atom/ps)", "max |ΔE| (meV/atom)", "strides",
                                "stopped"], energy)
    temps = [[n, ensemble, _f(t["target_K"]), ", ".join(f"{s} {_f(v)}" for s, v in t["species_K"].items()),
              _f(t["largest_deviation_percent"]), "—" if not t["stopped"] else t["stopped"]["reason"]]
             for n, r in rows for ensemble, t in r["temperature"].items()]
    lines += [""] + _table(["model", "thermostat", "target (K)", "species T (K)", "largest deviation (%)", "stopped"],
                           temps)
    shapes = [(n, r["structure"]) for n, r in rows if r.get("structure")]
    if shapes:
        lines += ["", "Structure and motion, Langevin with both filters against velocity Verlet with the companion "
                  "(same start, same simulated time; the floor: a second velocity-Verlet run with another noise seed). "
                  "Plots: `stride_rdf_*.png`, `stride_msd_*.png`.", ""]
        table = []
        for n, x in shapes:
            species = list(x["msd"]["predictor"])
            for label, sc in (("predictor", x["scores"]), ("velocity Verlet, other seed (floor)", x["noise_floor"])):
                key = "predictor" if label == "predictor" else "velocity_verlet_2"
                table.append([n, label, _f(sc["hr_mae"]), _f(sc["rdf_mae"]),
                              ", ".join(f"{z} {_f(x['msd'][key][z]['final_A2'])}" for z in species),
                              "—" if key != "predictor" else ", ".join(k for k, v in (x["within_noise"] or {}).items()
                                                                        if v) or "none"])
            table.append([n, "velocity Verlet (reference)", "0", "0", ", ".join(
                f"{z} {_f(x['msd']['velocity_verlet_1'][z]['final_A2'])}" for z in species), "—"])
        lines += _table(["model", "run", "h(r)-MAE", "RDF-MAE", "MSD at half the run (Å²)", "within noise"], table)
    speeds = [[n, _f(r["speed"]["s_per_ps_predictor"]), _f(r["speed"]["s_per_ps_velocity_verlet"]),
               _f(r["speed"]["speedup"])] for n, r in rows if r.get("speed")]
    if speeds:
        lines += [""] + _table(["model", "s per ps (predictor + filters)", "s per ps (velocity Verlet, companion)",
                                "speed-up"], speeds)
    return lines
