"""metrics.json, PNG plots of every model side by side, and report.md (a short table per part).

Cross-model plots and the report are drawn from the metrics dict alone, so a resumed evaluation redraws them
from stored results.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from ase.data import chemical_symbols
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from longmd.analysis.plots import plot_distance_histogram, plot_jaccard, plot_mepa_vs_step, plot_rdf
from longmd.analysis.rollout_test import BAND
from longmd.atomic import atomic_write_text
from longmd.evaluation.context import slug
from longmd.evaluation.parts.stability import FLOOR_FACTOR, SCORES
from longmd.training.run_log import best_per_s, plot_best_per_s, read_records


def clean(obj):
    """JSON-safe copy: numpy scalars/arrays to Python, NaN and inf to None."""
    if isinstance(obj, Mapping):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return clean(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def write_metrics(metrics: dict, out: Path) -> Path:
    return atomic_write_text(out / "metrics.json", json.dumps(clean(metrics), indent=1))


def plot_xy(curves: Mapping[str, tuple], path: Path, title: str, xlabel: str, ylabel: str,
            hline: float | None = None, log_y: bool = False) -> Path:
    """Curves with their own x values: ``{label: (x, y)}``."""
    fig = Figure(figsize=(6.5, 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    for label, (x, y) in curves.items():
        style = {"color": "black", "linewidth": 1.5} if label.startswith("reference") else {"linewidth": 1.0}
        ax.plot(x, y, label=label, **style)
    if hline is not None:
        ax.axhline(hline, color="grey", linestyle="--", linewidth=1)
    if log_y:
        ax.set_yscale("log")
    if curves:
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, format="png")
    return path


def _wide_range(curves: Mapping[str, list]) -> bool:
    values = np.concatenate([np.asarray(v, dtype=float) for v in curves.values()]) if curves else np.zeros(0)
    values = values[np.isfinite(values) & (values > 0)]
    return bool(len(values)) and values.max() / values.min() > 100


def make_plots(metrics: dict, out: Path) -> list[str]:
    """Every cross-model figure the results allow; returns file names."""
    models = metrics["models"]
    ref = metrics.get("reference", {})
    dt = metrics["protocol"]["timestep_fs"]
    files: list[Path] = []
    roll = {n: m["rollout"]["curves"] for n, m in models.items() if "rollout" in m}
    if roll:
        mepa = {n: c["over_starts"]["mepa"] if c.get("over_starts") else c["mepa"] for n, c in roll.items()}
        species = {n: c["over_starts"]["per_species"] if c.get("over_starts") else c["per_species"]
                   for n, c in roll.items()}
        bands = [c["over_starts"]["band_percentiles"] for c in roll.values() if c.get("over_starts")]
        label = f"{bands[0][0]:g}-{bands[0][1]:g} % of starts" if bands else ""
        values = {n: m["mean"] + m["hi"] if isinstance(m, dict) else m for n, m in mepa.items()}
        files.append(plot_mepa_vs_step(mepa, out / "mepa_vs_step.png", timestep_fs=dt, log_y=_wide_range(values),
                                       per_species=species, band_label=label))
        dev = {n: (np.arange(len(c["position_deviation_A"])) * dt, c["position_deviation_A"]) for n, c in roll.items()}
        files.append(plot_xy(dev, out / "position_deviation.png", "deviation from the reference trajectory",
                             "time (fs)", "mean |x - x_ref| (Å)"))
    stab = {n: m["stability"] for n, m in models.items() if m.get("stability", {}).get("structure")}
    if stab and "stability" in ref:
        rs = ref["stability"]["structure"]
        r = np.asarray(rs["r"])
        h = {"reference": rs["h"], **{n: s["structure"]["h"] for n, s in stab.items()}}
        g = {"reference": rs["g"], **{n: s["structure"]["g"] for n, s in stab.items()}}
        density = rs.get("rdf_normalization") == "pair_density"
        name = "n(r)" if density else "g(r)"
        files.append(plot_distance_histogram(r, h, out / "distance_histogram.png", "h(r) of the final frames"))
        files.append(plot_rdf(r, g, out / "rdf.png", f"{name} of the final frames", density))
        for pair, g_ref in rs["partial"].items():
            curves = {"reference": g_ref, **{n: s["structure"]["partial"][pair] for n, s in stab.items()
                                             if pair in s["structure"]["partial"]}}
            files.append(plot_rdf(r, curves, out / f"rdf_{pair}.png", f"{name} {pair}", density))
        for k, pair in enumerate(ref["stability"]["tracked"]):
            curves = {}
            for j, run in enumerate(pair["runs"]):
                curves[f"reference {j}"] = (run["times_fs"], run["distance_A"])
            for n, s in stab.items():
                for j, run in enumerate(s["tracked"][k]["runs"] if k < len(s["tracked"]) else []):
                    curves[f"{n} run {j}"] = (run["times_fs"], run["distance_A"])
            files.append(plot_xy(curves, out / f"tracked_{slug(pair['label'])}.png", f"distance {pair['label']}",
                                 "time from the start (fs)", "distance (Å)", hline=pair["threshold_A"]))
    drift = {n: m["drift"]["energy_curve"] for n, m in models.items() if m.get("drift", {}).get("energy_curve")}
    if drift:
        curves = {n: (c["times_fs"], c["dE_meV_per_atom"]) for n, c in drift.items()}
        files.append(plot_xy(curves, out / "energy_drift.png", "NVE total energy", "time (fs)",
                             "E_tot - E_tot(0) (meV/atom)"))
    jac = ref.get("jaccard")
    if jac and "ks" in jac:
        curves = {**jac["per_species"], "all atoms": jac["mean"]}
        files.append(plot_jaccard(np.asarray(jac["ks"]), curves, out / "jaccard.png", level=jac["level"]))
    return [Path(f).name for f in files]


def _f(x, digits: int = 3, scale: float = 1.0) -> str:
    if x is None:
        return "—"
    if isinstance(x, float) and not math.isfinite(x):
        return "inf" if x > 0 else "nan"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)) and scale == 1.0:
        return str(x)
    return f"{x * scale:.{digits}g}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *["| " + " | ".join(r) + " |" for r in rows]]


def _models_section(metrics: dict) -> list[str]:
    p, o = metrics["protocol"], metrics["protocol"]["options"]
    lines = ["# longmd evaluation", "",
             f"Held-out data: {len(p['held_out'])} trajectories ({', '.join(p['held_out'])}), "
             f"timestep {p['timestep_fs']:g} fs. Parts: {', '.join(p['parts'])}. dtype {o['dtype']}, "
             f"device {o['device']}, seed {o['seed']}. All numbers: `metrics.json`; definitions: docs/evaluation.md.",
             ""]
    rows = [[n, f"`{m.get('spec') or m.get('class')}`", _f(m.get("n_parameters"))]
            for n, m in metrics["models"].items()]
    return lines + _table(["model", "source", "parameters"], rows)


def _rollout_section(metrics: dict) -> list[str]:
    rows = [(n, m["rollout"]) for n, m in metrics["models"].items() if "rollout" in m]
    if not rows:
        return []
    species = list(rows[0][1]["mepa_per_species_mean"])
    r0 = rows[0][1]
    lines = ["", f"## Rollout test ({r0['steps']} NVE steps from {len(r0['starts'])} held-out starts)", "",
             f"MEPA = per-species force MAE ({r0['species_reduction']} over species) per step, eV/Å; the model's "
             "forces on its own trajectory vs the reference forces of the same step. Plots: `mepa_vs_step.png` "
             f"(mean over the starts, each scored on its own, with the band of {BAND[0]:g}-{BAND[1]:g} % of the "
             "starts; per species below), `position_deviation.png`.", ""]
    header = ["model", "MEPA mean", "MEPA last step", *[f"MEPA {s}" for s in species], "deviation last step (Å)",
              "blew up"]
    table = [[n, _f(r["mepa_mean"]), _f(r["mepa_final"]), *[_f(r["mepa_per_species_mean"].get(s)) for s in species],
              _f(r["position_deviation_final_A"]), f"{r['failed']}/{len(r['starts'])}"] for n, r in rows]
    return lines + _table(header, table)


def _frames_section(metrics: dict) -> list[str]:
    rows = [(n, m["frames"]) for n, m in metrics["models"].items() if "frames" in m]
    if not rows:
        return []
    species = list(rows[0][1]["force_mae_per_species"])
    lines = ["", f"## Single-frame errors ({rows[0][1]['n_frames']} held-out frames)", "",
             "Plots: `parity_forces_*.png`, `parity_energy_*.png`.", ""]
    header = ["model", "E MAE (meV/atom)", "E RMSE (meV/atom)", "F MAE (eV/Å)", "F RMSE (eV/Å)",
              *[f"F MAE {s}" for s in species], "MEPA"]
    table = [[n, _f(r["energy_mae_per_atom"], scale=1000), _f(r["energy_rmse_per_atom"], scale=1000),
              _f(r["force_mae"]), _f(r["force_rmse"]), *[_f(r["force_mae_per_species"].get(s)) for s in species],
              _f(r["mepa"])] for n, r in rows]
    return lines + _table(header, table)


def _stability_section(metrics: dict) -> list[str]:
    rows = [(n, m["stability"]) for n, m in metrics["models"].items() if "stability" in m]
    if not rows:
        return []
    o = metrics["protocol"]["options"]
    s0 = rows[0][1]
    tracked = metrics.get("reference", {}).get("stability", {}).get("tracked", [])
    lines = ["", f"## Stability ({s0['n_runs']} runs x {s0['steps']} steps, {s0['ensemble']})", "",
             f"A run fails at NaN, two atoms closer than {o['min_distance_A']} Å, or a temperature above "
             f"{_f(s0.get('max_temperature_K'))} K. h(r) and RDFs of the final frames vs the reference's. Events: "
             f"distance above its threshold for >= {o['event_min_fs']:g} fs (count, rate). Plots: "
             "`distance_histogram.png`, `rdf*.png`, `tracked_*.png`. The reference row holds the noise floor: the "
             "same scores between two independent reference samples (alternate held-out trajectories, or the two "
             "halves of one), what an exact model scores; \"within noise\" lists the scores at most "
             f"{FLOOR_FACTOR:g}x that floor.", ""]
    structure = metrics.get("reference", {}).get("stability", {}).get("structure") or {}
    if structure.get("rdf_normalization") == "pair_density":
        lines[-1:-1] = ["The frames are not bulk (vacuum or a non-periodic axis), so the RDFs are pair densities "
                        "n(r) (1/Å³, the density of atoms at distance r from an atom; independent of the vacuum) "
                        "and RDF-MAE is in 1/Å³."]
    skipped = structure.get("partial_skipped")
    if skipped:
        listed = ", ".join(f"{k} ({n} atom pair(s))" for k, n in skipped.items())
        lines[-1:-1] = [f"Partial RDFs skipped (fewer than 3 atom pairs per frame: no structure to compare): {listed}."]

    def events(t: dict) -> str:
        return f"{t['events']} ({_f(t['events_per_ps'])}/ps)"

    header = ["model", "stable", "time mean (ps)", "time min (ps)", "h(r)-MAE (1/Å)", "h(r) L1", "RDF-MAE",
              *[f"{t['label']} events (> {_f(t['threshold_A'])} Å)" for t in tracked]]
    floor = metrics.get("reference", {}).get("stability", {}).get("noise_floor") or {}
    header.insert(7, "within noise")
    table = [["reference (noise floor)", "—", "—", "—", *[_f(floor.get(k)) for k in SCORES], "—",
              *[events(t) for t in tracked]]]
    for n, s in rows:
        ok = s.get("within_noise")
        verdict = "—" if ok is None else (", ".join(k for k in SCORES if ok.get(k)) or "none")
        table.append([n, f"{s['stable_runs']}/{s['n_runs']}", _f(s["stability_time_mean_fs"], scale=1e-3),
                      _f(s["stability_time_min_fs"], scale=1e-3), _f(s["hr_mae"]), _f(s["hr_l1"]), _f(s["rdf_mae"]),
                      verdict, *[events(t) for t in s["tracked"]], *["—"] * (len(tracked) - len(s["tracked"]))])
    lines += _table(header, table)
    failures = [f"- {n}: {r['message']}" for n, s in rows for r in s["runs"] if not r["stable"]]
    return lines + (["", *failures] if failures else []) + _verdict_table(rows) + _bonds_table(structure, rows)


def _verdict_table(rows: list[tuple[str, dict]]) -> list[str]:
    """Stable / unstable (RDF-MAE against the GraNNField study's 0.02, next to the reference's noise floor) and the
    failure modes seen, with their evidence."""
    rows = [(n, s["verdict"]) for n, s in rows if s.get("verdict")]
    if not rows:
        return []
    v0 = rows[0][1]
    lines = ["", f"Verdict: stable = no run blew up and RDF-MAE <= {_f(v0.get('rdf_mae_threshold'))} (the GraNNField "
             "study's line; compare the reference's noise floor beside it). Failure modes: atom fusion (a species "
             "pair closer than 0.75 x the reference's closest approach: model, reference Å), lattice mismatch (a "
             "first RDF peak moved, Å), framework melting (MSD of the non-mobile species far above the "
             "reference's: model, reference Å²).", ""]

    def evidence(v: dict) -> str:
        parts = []
        for mode, e in v.get("evidence", {}).items():
            if isinstance(e, dict):
                e = ", ".join(f"{k} {_f(x) if not isinstance(x, list) else '/'.join(_f(y) for y in x)}"
                              for k, x in e.items())
            elif isinstance(e, list):
                e = ", ".join(_f(x) if isinstance(x, float) else str(x) for x in e)
            parts.append(f"{mode}: {e}")
        return "; ".join(parts) or "—"

    table = [[n, "stable" if v["stable"] else "unstable", _f(v.get("rdf_mae")), _f(v.get("rdf_mae_noise_floor")),
              ", ".join(v["failure_modes"]) or "none", evidence(v)] for n, v in rows]
    return lines + _table(["model", "verdict", "RDF-MAE", "noise floor", "failure modes", "evidence"], table)


def _bonds_table(reference: dict, rows: list[tuple[str, dict]]) -> list[str]:
    """Coordination (and closest approach) per ordered species pair, reference first: homopolar bonds (Se-Se in
    GeSe2) or fusing atoms show here."""
    ref = reference.get("bonds") or {}
    if not ref:
        return []
    cut = ", ".join(f"{k} {_f(b['cutoff_A'])}" for k, b in ref.items())
    lines = ["", "Bonds in the final frames: mean number of B atoms bonded to an A atom (A-B), closest A-B distance "
             f"in Å in brackets; bonded = closer than 1.2 x the covalent radii ({cut} Å).", ""]

    def cell(b: dict | None) -> str:
        return "—" if b is None else f"{b['coordination']:.2f} ({_f(b['min_distance_A'])})"

    table = [["reference", *[cell(b) for b in ref.values()]]]
    table += [[n, *[cell(((s.get("structure") or {}).get("bonds") or {}).get(k)) for k in ref]] for n, s in rows]
    return lines + _table(["model", *ref], table)


def _jaccard_section(metrics: dict) -> list[str]:
    jac = metrics.get("reference", {}).get("jaccard")
    if not jac or "ks" not in jac:
        return []
    ks = [k for k in (1, 2, 5, 10, 20, 50) if k <= len(jac["ks"])]
    lines = ["", "## Neighbourhood smoothness (reference, model-independent)", "",
             f"Jaccard similarity of neighbour sets (cutoff {jac['cutoff_A']:g} Å) at offsets of k frames "
             f"({jac['frame_interval_fs']:g} fs each). Advice: `neighbor_update_every` <= "
             f"{jac['advised_neighbor_update_every']} (the worst species stays >= {jac['level']}). "
             "Plot: `jaccard.png`.", ""]
    curves = {**jac["per_species"], "all atoms": jac["mean"]}
    return lines + _table(["species", *[f"k={k}" for k in ks]],
                          [[s, *[_f(c[k - 1]) for k in ks]] for s, c in curves.items()])


def _drift_speed_section(metrics: dict) -> list[str]:
    rows = [(n, m.get("drift") or {}, m.get("speed") or {}) for n, m in metrics["models"].items()
            if "drift" in m or "speed" in m]
    if not rows:
        return []
    lines = ["", "## Energy drift (NVE) and speed", "",
             "Speed: plain NVE steps with Verlet lists, the same system and replicas for every model; ns/day per "
             "replica. Plot: `energy_drift.png`.", ""]
    table = [[n, _f(d.get("drift_meV_per_atom_per_ps")), _f(d.get("max_energy_deviation_meV_per_atom")),
              _f(sp.get("steps_per_s")), _f(sp.get("ns_per_day")), _f(sp.get("replicas"))] for n, d, sp in rows]
    return lines + _table(["model", "drift (meV/atom/ps)", "max abs ΔE (meV/atom)", "steps/s", "ns/day", "replicas"],
                          table)


def _pm(x: dict | None, digits: int = 3) -> str:
    """``mean ± std`` of a summary dict (``mean``, ``std``), or a dash."""
    return "—" if not x else f"{x['mean']:.{digits}g} ± {x['std']:.2g}"


def _transport_section(metrics: dict) -> list[str]:
    rows = [(n, m["transport"]) for n, m in metrics["models"].items() if "transport" in m]
    ref = metrics.get("reference", {}).get("transport", {})
    if not rows and not ref:
        return []
    species = ref.get("species") or rows[0][1]["species"]
    lines = ["", f"## Transport ({species})", "",
             "Tracer D from kinisi's Bayesian fit of the MSD (posterior mean ± std; the reference's runs at one "
             "temperature pooled, a model's replicas pooled); σ by Nernst-Einstein; Arrhenius fit of D(T) by kinisi, "
             "extrapolated to 300 K. Plots: `msd_*.png`, `arrhenius_*.png`.", ""]
    table = []
    for n, t in [("reference", ref)] * bool(ref) + rows:
        arr = t.get("arrhenius") or {}
        for x in t.get("temperatures", []):
            if "D_cm2_per_s" in x:
                table.append([n, _f(x["temperature_K"]), _pm(x["D_cm2_per_s"]), _pm(x["sigma_S_per_cm"]),
                              _pm(arr.get("Ea_eV")), _pm(arr.get("sigma_S_per_cm"))])
    lines += _table(["model", "T (K)", "D (cm²/s)", "σ (S/cm)", "Ea (eV)", "σ(300 K) (S/cm)"], table)
    temps = sorted({k for _, t in [("reference", ref)] * bool(ref) + rows for k in t.get("table", {})}, key=float)
    if temps:
        lines += ["", "-log10 σ (σ in S/cm; the GraNNField study's Table 2), mean ± std:", ""]
        lines += _table(["model", *[f"{k} K" for k in temps]],
                        [[n, *[_pm(dict(zip(("mean", "std"), t["table"][k])), 3) if k in t.get("table", {}) else "—"
                               for k in temps]] for n, t in [("reference", ref)] * bool(ref) + rows])
    return lines


def training_section(run_dir: Path, out: Path) -> list[str]:
    """The training run's validation MEPA of the best model of each S (the DT paper's Figure 3): a table and
    ``best_per_s.png`` in ``out``, from the run's ``metrics.jsonl`` (nothing without one)."""
    records = read_records(run_dir)
    if not records:
        return []
    best = best_per_s(records)
    species = sorted({k for b in best for k in b if k.startswith("val_mepa_Z")}, key=lambda k: int(k[10:]))
    plot_best_per_s(records, out / "best_per_s.png")
    lines = ["", "## Training: the best model of each S", "",
             f"Validation rollout MEPA (eV/Å) of the best model of each S of the training run `{run_dir}` "
             "(`best_S{S}.pt`; the DT paper's Figure 3), on its validation windows. Plot: `best_per_s.png`.", ""]
    header = ["S", "epochs", "best at epoch", "validation MEPA", *[f"MEPA {chemical_symbols[int(k[10:])]}"
                                                                   for k in species]]
    rows = [[str(b["S"]), str(b["epochs"]), str(b["epoch"]), _f(b["val_mepa"], 4), *[_f(b.get(k), 4) for k in species]]
            for b in best]
    return lines + _table(header, rows)


def add_training_section(report: Path, run_dir: Path) -> Path:
    """Append :func:`training_section` of ``run_dir`` to an existing report.md."""
    lines = training_section(run_dir, report.parent)
    if lines:
        atomic_write_text(report, report.read_text().rstrip("\n") + "\n" + "\n".join(lines) + "\n")
    return report


def write_report(metrics: dict, out: Path, plots: list[str]) -> Path:
    """report.md: one short table per part that ran."""
    lines = _models_section(metrics)
    from longmd.evaluation.stride_report import stride_section  # imports this module

    for section in (_rollout_section, _frames_section, _stability_section, _jaccard_section, _drift_speed_section,
                    _transport_section, stride_section):
        lines += section(metrics)
    lines += ["", "## Files", "", ", ".join(f"`{p}`" for p in ["metrics.json", *plots]), ""]
    return atomic_write_text(out / "report.md", "\n".join(lines))
