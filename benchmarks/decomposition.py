"""Does decomposing the energy help? The inductive-bias paper's study (Table 1, Figs. 2b/3b), rerunnable.

On the same training data and the same wall-time budget (``--minutes`` per model, its whole run), trains
  (a) ``egnn``: an EGNN alone, its width chosen so its parameter count is closest to (b)'s,
  (b) ``decomposed``: pair + triplet + EGNN, hierarchically (the packaged ``decomposed`` config's terms): the
      pair and triplet stages ``--small-epochs`` each, then the EGNN with Dynamic Training for the rest,
then reports for each: parameters, energy RMSE (meV/atom) and force RMSE (eV/Å) on training and test frames
of the run's split (Table 1), and ``--runs`` Langevin runs of ``--ps`` ps at ``--temperature-K`` through
``longmd evaluate``'s stability part, started from and compared with ``--reference`` (trajectories at that
temperature, two or more, so the structure scores have a noise floor): stable fraction, time to failure,
RDF-MAE against the floor, bonds per species pair (Se-Se clustering: coordination and closest approach against
the reference's) and the potential energy per atom against time (``epot_vs_time.png``, Figs. 2b/3b).
Writes ``OUT/results.json``, ``OUT/table.md`` and the evaluation (``OUT/eval/report.md``, plots).

  python benchmarks/decomposition.py --out runs/decomposition --ps 0.5       # embedded example, reduced
  longmd datagen gese2 data/gese2 && longmd datagen gese2 data/gese2_1100K --temperatures 1100 \
      --trajectories 2 --frames 1500 --seed 7                                   # CHGNet: training + reference
  python benchmarks/decomposition.py --data data/gese2/gese2.extxyz.xz \
      --reference data/gese2_1100K/gese2.extxyz.xz --temperature-K 1100 --ps 15 --runs 8 --out runs/dec_gese2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from ase import Atoms  # noqa: E402

from common import write_json  # noqa: E402
from longmd.calculator import atoms_to_graph  # noqa: E402
from longmd.config import load_config  # noqa: E402
from longmd.evaluation.core import evaluate  # noqa: E402
from longmd.evaluation.options import EvalOptions  # noqa: E402
from longmd.evaluation.parts.stability import read_runs  # noqa: E402
from longmd.io.read import read_trajectories  # noqa: E402
from longmd.models.base import predict  # noqa: E402
from longmd.models.io import load_model  # noqa: E402
from longmd.models.registry import build_potential  # noqa: E402
from longmd.training.run_log import trained_minutes  # noqa: E402
from longmd.training.setup import load_data, make_split  # noqa: E402
from longmd.training.trainer import Trainer  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "src" / "longmd" / "configs" / "decomposed.yaml"


def matched_egnn_hidden(cfg, species: list[int]) -> tuple[int, int, int]:
    """The EGNN width whose parameter count is closest to the decomposed model's: (hidden, its count, target)."""
    terms = [t.as_dict() for t in cfg.model.term_list()]
    target = build_potential(species, terms).n_parameters()
    egnn = next(t for t in terms if t["kind"] == "egnn")
    counts = {h: build_potential(species, [{**egnn, "options": {**egnn["options"], "hidden": h,
                                                                  "zero_readout": False}}]).n_parameters()
              for h in range(8, 257, 2)}
    hidden = min(counts, key=lambda h: abs(counts[h] - target))
    return hidden, counts[hidden], target


def train_models(args, species: list[int]) -> dict[str, dict]:
    """Both models under the same wall-time budget (``training.max_minutes``: the whole run of each model)."""
    base = [f"training.seed={args.seed}", "training.progress=false", f"training.device={args.device}",
            f"training.max_minutes={args.minutes}",
            *([f"data.paths=[{','.join(args.data)}]"] if args.data else []), *args.set]
    hidden, n_egnn, n_dec = matched_egnn_hidden(load_config(CONFIG, base), species)
    print(f"EGNN alone: hidden {hidden}, {n_egnn:,} parameters; decomposed: {n_dec:,}")
    gnn = (f"{{name: gnn, train: [egnn], mode: dynamic, loss: mepa, s_max: {args.s_max}, "
           f"max_epochs: {args.epochs}}}")
    variants = {
        "egnn": [f"model.terms=[{{name: egnn, preset: small, options: {{hidden: {hidden}}}}}]",
                 f"training.stages=[{gnn.replace('train: [egnn], ', '')}]"],
        "decomposed": [f"training.stages=[{{name: pair, train: [pair], mode: conventional, "
                       f"max_epochs: {args.small_epochs}}}, {{name: triplet, train: [triplet], mode: conventional, "
                       f"max_epochs: {args.small_epochs}}}, {gnn}]"],
    }
    runs = {}
    for name, extra in variants.items():
        out = args.out / name
        cfg = load_config(CONFIG, [*base, f"out={out}", *extra])
        if args.reuse and (out / "best.pt").exists():
            print(f"== reusing {out}")
            records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        else:
            print(f"== training {name} -> {out}")
            records = Trainer(cfg, log=print).run().records
        runs[name] = {"model": str(out / "best.pt"), "epochs": len(records),
                      "train_minutes": trained_minutes(records), "config": cfg.to_dict()}
    return runs


def frame_errors(model, trajectories, frames: list[tuple[int, int]]) -> dict[str, float]:
    """Energy RMSE and mean error (meV/atom) and force RMSE (eV/Å) of ``frames``."""
    dtype = next(p.dtype for p in model.parameters())
    de, df = [], []
    for t, f in frames:
        tr = trajectories[t]
        atoms = Atoms(numbers=tr.numbers, positions=tr.positions[f], cell=tr.cell[f], pbc=tr.pbc)
        graph, _ = atoms_to_graph(atoms, model.cutoff, torch.device("cpu"), dtype)
        p = predict(model, graph)
        de.append((float(p.energy[0]) - tr.energy[f]) / tr.n_atoms)
        df.append((p.forces.detach().double().numpy() - tr.forces[f]).ravel())
    de = np.array(de)
    return {"energy_rmse_meV_per_atom": float(np.sqrt(np.mean(de**2)) * 1000),
            "energy_mean_error_meV_per_atom": float(de.mean() * 1000),
            "force_rmse_eV_per_A": float(np.sqrt(np.mean(np.concatenate(df) ** 2))), "frames": len(frames)}


def pick(split, trajectories, subset: str, count: int, seed: int) -> list[tuple[int, int]]:
    frames = [(t, int(f)) for t, fr in split.subsets[subset].items()
              for f in (range(len(trajectories[t])) if fr is None else fr)]
    rng = np.random.default_rng(seed)
    return [frames[k] for k in sorted(rng.choice(len(frames), min(count, len(frames)), replace=False))]


def plot_epot(metrics: dict, out: Path, eval_dir: Path, reference) -> Path:
    """Potential energy per atom against time of every run of every model (Figs. 2b/3b), the reference's mean and
    spread as a band."""
    fig, ax = plt.subplots(figsize=(7, 4))
    e_ref = np.concatenate([tr.energy / tr.n_atoms for tr in reference])
    ax.axhspan(np.percentile(e_ref, 5), np.percentile(e_ref, 95), color="0.85", label="reference 5-95 %")
    for k, (name, entry) in enumerate(metrics["models"].items()):
        stab = entry["stability"]
        runs = read_runs(eval_dir / stab["files"], stab["n_runs"])
        n_atoms = reference[0].n_atoms
        for r, run in enumerate(runs):
            th = run["thermo"]
            ax.plot(th[:, 0] / 1000, th[:, 1] / n_atoms, color=f"C{k}", lw=0.6, alpha=0.7,
                    label=name if r == 0 else None)
    ax.set_xlabel("time (ps)")
    ax.set_ylabel("potential energy (eV/atom)")
    ax.set_title("Langevin runs: potential energy per atom")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "epot_vs_time.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", action="append", help="training trajectories (default: the config's, the example)")
    p.add_argument("--reference", action="append",
                   help="trajectories at --temperature-K the runs start from and are compared with (default: the "
                        "test trajectories of the training split)")
    p.add_argument("--out", type=Path, default=Path("runs/decomposition"))
    p.add_argument("--epochs", type=int, default=200, help="epoch cap of the EGNN (stage) of each model")
    p.add_argument("--small-epochs", type=int, default=4, help="epochs of the pair and of the triplet stage")
    p.add_argument("--minutes", type=float, default=20.0, help="wall-time budget per model (its whole run)")
    p.add_argument("--s-max", type=int, default=2, help="Dynamic Training's S_max in the GNN stage")
    p.add_argument("--frames", type=int, default=100, help="frames for the RMSEs, per subset")
    p.add_argument("--runs", type=int, default=4, help="Langevin runs per model (the paper: >= 8)")
    p.add_argument("--ps", type=float, default=1.0, help="length of each run, ps (the paper: 15)")
    p.add_argument("--temperature-K", type=float, default=None, help="thermostat (default: the reference's mean)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--set", action="append", default=[], help="extra config override for both models")
    p.add_argument("--reuse", action="store_true", help="reuse finished training runs and evaluation in --out")
    p.add_argument("--train-only", action="store_true", help="stop after training (evaluate later with --reuse)")
    args = p.parse_args(argv)
    cfg = load_config(CONFIG, [*([f"data.paths=[{','.join(args.data)}]"] if args.data else []), *args.set])
    trajectories = load_data(cfg)
    species = sorted({int(z) for tr in trajectories for z in tr.numbers})
    runs = train_models(args, species)
    if args.train_only:
        return
    split = make_split(cfg, trajectories)
    frames = {s: pick(split, trajectories, s, args.frames, args.seed) for s in ("train", "test")}
    models = {name: load_model(run["model"]).double() for name, run in runs.items()}
    results = {name: {"parameters": models[name].n_parameters(),
                      **{f"{s}_errors": frame_errors(models[name], trajectories, frames[s]) for s in frames},
                      "train_minutes": run["train_minutes"], "epochs": run["epochs"]} for name, run in runs.items()}
    if args.reference:
        reference = [tr for path in args.reference for tr in read_trajectories(path)]
        test = None
    else:
        reference, test = trajectories, split
    dt = reference[0].timestep_fs
    steps = int(round(args.ps * 1000 / dt))
    options = EvalOptions(seed=args.seed, device=args.device, progress=False, threads=1, ensemble="langevin",
                          temperature_K=args.temperature_K, long_runs=args.runs, long_steps=steps,
                          record_every=max(1, steps // 200), final_fraction=0.5, frames_max=args.frames)
    eval_dir = args.out / "eval"
    metrics = evaluate(models, reference, eval_dir, test=test, parts="frames,stability", options=options,
                       specs={n: r["model"] for n, r in runs.items()}, resume=args.reuse)
    ref_stab = metrics["reference"]["stability"]
    for name, entry in metrics["models"].items():
        stab = entry["stability"]
        results[name]["nvt"] = {
            k: stab.get(k) for k in ("temperature_K", "steps", "stable_runs", "n_runs", "stability_time_mean_fs",
                                     "stability_time_min_fs", "rdf_mae", "hr_mae", "rdf_mae_partial",
                                     "within_noise", "coordination_difference")}
        results[name]["nvt"]["bonds"] = (stab.get("structure") or {}).get("bonds")
        results[name]["nvt"]["failures"] = [r["message"] for r in stab["runs"] if not r["stable"]]
        results[name]["reference_frames"] = {k: entry["frames"][k] for k in ("force_rmse", "force_mae",
                                                                              "energy_rmse_per_atom")}
    plots = [str(plot_epot(metrics, args.out, eval_dir, reference)), *metrics.get("plots", [])]
    reference_info = {"trajectories": ref_stab["trajectories"], "temperature_mean_K": ref_stab["temperature_mean_K"],
                      "noise_floor": ref_stab["noise_floor"], "bonds": ref_stab["structure"]["bonds"],
                      "timestep_fs": dt}
    write_json({"settings": {k: str(v) for k, v in vars(args).items()}, "reference": reference_info,
                "results": results, "plots": plots}, args.out, "results.json")
    (args.out / "table.md").write_text(table(results, reference_info) + "\n")
    print(table(results, reference_info))


def table(results: dict, reference: dict) -> str:
    floor = (reference.get("noise_floor") or {}).get("rdf_mae")
    homo = [k for k in reference["bonds"] if k.split("-")[0] == k.split("-")[1]]
    lines = ["| model | parameters | epochs (min) | E RMSE train/test (meV/atom) | F RMSE train/test (eV/Å) | "
             "stable | time to failure min (ps) | RDF-MAE | " + " | ".join(f"{k} coord. (closest Å)" for k in homo)
             + " |", "|---" * (8 + len(homo)) + "|"]

    def bond(b: dict | None) -> str:
        if not b:
            return "—"
        d = b.get("min_distance_A")
        return f"{b['coordination']:.2f} ({d:.2f})" if d is not None else f"{b['coordination']:.2f} (—)"

    lines.append("| reference | | | | | | | " + (f"{floor:.4f} (noise floor)" if floor is not None else "—") + " | "
                 + " | ".join(bond(reference["bonds"][k]) for k in homo) + " |")
    for name, r in results.items():
        e = [r[f"{s}_errors"]["energy_rmse_meV_per_atom"] for s in ("train", "test")]
        f = [r[f"{s}_errors"]["force_rmse_eV_per_A"] for s in ("train", "test")]
        n = r["nvt"]
        lines.append(f"| {name} | {r['parameters']:,} | {r['epochs']} ({r['train_minutes']:.0f}) | {e[0]:.2f} / "
                     f"{e[1]:.2f} | {f[0]:.3f} / {f[1]:.3f} | {n['stable_runs']}/{n['n_runs']} | "
                     f"{n['stability_time_min_fs'] / 1000:.2f} | "
                     + (f"{n['rdf_mae']:.4f}" if n["rdf_mae"] is not None else "—") + " | "
                     + " | ".join(bond((n.get("bonds") or {}).get(k)) for k in homo) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
