"""Does decomposing the energy help? The inductive-bias paper's study (Table 1, Figs. 2b/3b), rerunnable.

On the same data and the same training budget, trains
  (a) ``egnn``: an EGNN alone (the packaged decomposed config's EGNN, sized up by ``--egnn-hidden``),
  (b) ``decomposed``: pair + triplet + EGNN, hierarchically (the packaged ``decomposed`` config's stages),
then reports for each: parameters, energy RMSE (meV/atom) and force RMSE (eV/Å) on training and test frames
(the test trajectories of the run's split), and ``--runs`` Langevin runs of ``--steps`` steps at
``--temperature-K`` from test frames: stable fraction and time to failure (longmd simulate's blow-up checks),
with the potential energy per atom against time. Writes ``OUT/results.json`` and ``OUT/table.md``.

  python benchmarks/decomposition.py --out runs/decomposition                        # embedded example, reduced
  python benchmarks/decomposition.py --data runs/datagen/gese2/gese2.extxyz.xz --temperature-K 1100 \\
      --timestep-fs 0.5 --steps 30000 --runs 8 --minutes 120 --out runs/decomposition_gese2   # the paper's size
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from ase import Atoms

from common import write_json
from longmd.calculator import atoms_to_graph
from longmd.config import load_config
from longmd.dynamics.simulate import simulate
from longmd.models.base import predict
from longmd.models.io import load_model
from longmd.training.setup import load_data, make_split
from longmd.training.trainer import Trainer

CONFIG = Path(__file__).resolve().parents[1] / "src" / "longmd" / "configs" / "decomposed.yaml"


def train_models(args) -> dict[str, dict]:
    """Both models under the same epoch budget (split equally over the decomposed model's stages) and wall time
    (``training.max_minutes``: the whole run of each model)."""
    base = [f"training.seed={args.seed}", "training.progress=false", f"training.device={args.device}",
            f"training.max_minutes={args.minutes}",
            *([f"data.paths=[{','.join(args.data)}]"] if args.data else []), *args.set]
    per_stage = max(1, args.epochs // 3)
    variants = {
        "egnn": [f"model.terms=[{{name: egnn, preset: small, options: {{hidden: {args.egnn_hidden}}}}}]",
                 f"training.stages=[{{name: gnn, mode: dynamic, loss: mepa, s_max: {args.s_max}, "
                 f"max_epochs: {args.epochs}}}]"],
        "decomposed": [f"training.stages=[{{name: pair, train: [pair], mode: conventional, max_epochs: {per_stage}}}, "
                       f"{{name: triplet, train: [triplet], mode: conventional, max_epochs: {per_stage}}}, "
                       f"{{name: gnn, train: [egnn], mode: dynamic, loss: mepa, s_max: {args.s_max}, "
                       f"max_epochs: {per_stage}}}]"],
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
                      "train_minutes": sum(r["epoch_time_s"] for r in records) / 60, "config": cfg.to_dict()}
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


def stability(model, trajectories, starts, args, out: Path) -> dict:
    """``--runs`` Langevin runs from test frames: stable fraction, time to failure, potential energy per atom."""
    inits = []
    for t, f in starts:
        tr = trajectories[t]
        inits.append(Atoms(numbers=tr.numbers, positions=tr.positions[f], cell=tr.cell[f], pbc=tr.pbc,
                           momenta=tr.velocities[f] * tr.masses[:, None]))
    result = simulate(model, inits, steps=args.steps, timestep_fs=args.timestep_fs, ensemble="langevin",
                      temperature_K=args.temperature_K, out_dir=out, progress=False, seed=args.seed,
                      dtype=torch.float64, log_every=max(1, args.steps // 100), traj_every=max(1, args.steps // 20))
    completed = np.array(result.steps_completed)
    return {"runs": len(inits), "steps": args.steps, "stable_fraction": float(np.mean(completed >= args.steps)),
            "time_to_failure_ps": (completed * args.timestep_fs / 1000).tolist(), "status": result.status,
            "thermo": str(out / "thermo.csv")}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", action="append", help="trajectories (default: the config's, the embedded example)")
    p.add_argument("--out", type=Path, default=Path("runs/decomposition"))
    p.add_argument("--epochs", type=int, default=9, help="epochs per model (the decomposed one: a third per stage)")
    p.add_argument("--minutes", type=float, default=30.0, help="wall-time budget per model (its whole run)")
    p.add_argument("--s-max", type=int, default=2, help="Dynamic Training's S_max in the GNN stage")
    p.add_argument("--egnn-hidden", type=int, default=56,
                   help="width of the EGNN alone (56: ~50k parameters, the decomposed model's size with 3 species)")
    p.add_argument("--frames", type=int, default=100, help="frames for the RMSEs, per subset")
    p.add_argument("--runs", type=int, default=4, help="Langevin runs per model (the paper: >= 8)")
    p.add_argument("--steps", type=int, default=500, help="steps per run")
    p.add_argument("--timestep-fs", type=float, default=0.5)
    p.add_argument("--temperature-K", type=float, default=300.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--set", action="append", default=[], help="extra config override for both models")
    p.add_argument("--reuse", action="store_true", help="reuse finished training runs in --out")
    args = p.parse_args(argv)
    runs = train_models(args)
    cfg = load_config(CONFIG, [*([f"data.paths=[{','.join(args.data)}]"] if args.data else []), *args.set])
    trajectories = load_data(cfg)
    split = make_split(cfg, trajectories)
    frames = {s: pick(split, trajectories, s, args.frames, args.seed) for s in ("train", "test")}
    starts = pick(split, trajectories, "test", args.runs, args.seed + 1)
    results = {}
    for name, run in runs.items():
        model = load_model(run["model"]).double()
        results[name] = {
            "parameters": sum(q.numel() for q in model.parameters()),
            **{f"{s}_errors": frame_errors(model, trajectories, frames[s]) for s in frames},
            "nvt": stability(model, trajectories, starts, args, args.out / name / "nvt"),
            "train_minutes": run["train_minutes"], "epochs": run["epochs"],
        }
    write_json({"settings": {k: str(v) for k, v in vars(args).items()}, "results": results}, args.out, "results.json")
    lines = ["| model | parameters | E RMSE train/test (meV/atom) | F RMSE train/test (eV/Å) | stable |",
             "|---|---|---|---|---|"]
    for name, r in results.items():
        e = [r[f"{s}_errors"]["energy_rmse_meV_per_atom"] for s in ("train", "test")]
        f = [r[f"{s}_errors"]["force_rmse_eV_per_A"] for s in ("train", "test")]
        lines.append(f"| {name} | {r['parameters']:,} | {e[0]:.2f} / {e[1]:.2f} | {f[0]:.3f} / {f[1]:.3f} | "
                     f"{r['nvt']['stable_fraction']:.0%} of {r['nvt']['runs']} |")
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
