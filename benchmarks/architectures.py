"""Architectures side by side on the embedded example: EGNN, SchNet, PaiNN (and MACE) under one recipe.

Each architecture's ``small`` preset is trained with the packaged Dynamic Training recipe (``longmd train demo``:
S grows 1..4 on the H2/Pd6@graphene example) under the same wall-time budget, seed and data split, then all
are evaluated together by ``longmd evaluate``'s code (:func:`longmd.evaluation.cli.evaluate_run`) on the held-out
test trajectories: frame force MAE, rollout MEPA, NVE stability and speed (ns/day). Writes
``OUT/architectures.json`` (the table's numbers with the environment), ``OUT/table.md`` and each run's folder.

  python benchmarks/architectures.py --minutes 5 --out runs/architectures          # schnet/painn need schnetpack
  python benchmarks/architectures.py --kinds egnn,schnet,painn,mace --minutes 30 --out runs/architectures
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import time
from pathlib import Path

import torch

from common import write_json
from longmd.config import load_config
from longmd.evaluation.cli import evaluate_run
from longmd.evaluation.options import EvalOptions
from longmd.models.io import load_model
from longmd.training.trainer import train


def train_one(kind: str, args, out: Path) -> dict:
    """``longmd train demo --set model.name=KIND`` with the shared budget; the run's summary."""
    # each architecture alone: the demo's three_body (auto) would add a 3-body term under egnn and schnet only
    overrides = [f"out={out}", f"model.name={kind}", f"model.preset={args.preset}", "model.three_body=null",
                 "training.progress=false",
                 f"training.seed={args.seed}", f"training.max_minutes={args.minutes}", f"training.device={args.device}",
                 *args.set]
    cfg = load_config("demo", overrides)
    start = time.perf_counter()
    result = train(cfg)
    model = load_model(result.best_model)
    best = min(result.records, key=lambda r: r["val_mepa"])
    return {
        "kind": kind, "preset": args.preset, "parameters": model.n_parameters(), "best_model": str(result.best_model),
        "train_minutes": (time.perf_counter() - start) / 60, "epochs": len(result.records),
        "S_reached": max(r["S"] for r in result.records), "best_val_mepa": best["val_mepa"], "best_S": best["S"],
        "config": cfg,
    }


def row(name: str, run: dict, metrics: dict) -> dict:
    """The table's numbers of one model from ``metrics.json``."""
    m = metrics["models"][name]
    frames, rollout, stability, speed = (m.get(k, {}) for k in ("frames", "rollout", "stability", "speed"))
    return {
        "model": name, "parameters": run["parameters"], "epochs": run["epochs"], "S_reached": run["S_reached"],
        "train_minutes": run["train_minutes"], "best_val_mepa": run["best_val_mepa"],
        "force_mae": frames.get("force_mae"), "rollout_mepa_mean": rollout.get("mepa_mean"),
        "stable_runs": stability.get("stable_runs"), "stability_runs": stability.get("n_runs"),
        "stability_steps": stability.get("steps"), "ns_per_day": speed.get("ns_per_day"),
    }


def table(rows: list[dict]) -> str:
    def f(x, fmt="{:.4f}"):
        return "-" if x is None else fmt.format(x)

    lines = ["| model | parameters | epochs (S reached) | force MAE (eV/Å) | rollout MEPA (eV/Å) | stable NVE runs | "
             "ns/day |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['parameters']:,} | {r['epochs']} ({r['S_reached']}) | {f(r['force_mae'])} | "
                     f"{f(r['rollout_mepa_mean'])} | {r['stable_runs']}/{r['stability_runs']} "
                     f"({r['stability_steps']} steps) | {f(r['ns_per_day'], '{:.3f}')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kinds", default="egnn,schnet,painn", help="comma-separated term kinds (default %(default)s)")
    p.add_argument("--preset", default="small")
    p.add_argument("--minutes", type=float, default=5.0, help="training wall-time budget per model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--parts", default="frames,rollout,stability,speed", help="longmd evaluate parts")
    p.add_argument("--set", action="append", default=[], help="extra config override for every run (repeatable)")
    p.add_argument("--out", type=Path, default=Path("runs/architectures"))
    args = p.parse_args()
    torch.set_num_threads(1)
    runs = {kind: train_one(kind, args, args.out / kind) for kind in args.kinds.split(",")}
    first = next(iter(runs.values()))
    start = time.perf_counter()
    evaluate_run({k: r["best_model"] for k, r in runs.items()}, first["config"], args.out / args.kinds.split(",")[0]
                 / "split.json", args.out / "evaluate", parts=args.parts,
                 options=EvalOptions(device=args.device, threads=1, seed=args.seed))
    metrics = json.loads((args.out / "evaluate" / "metrics.json").read_text())
    rows = [row(k, r, metrics) for k, r in runs.items()]
    (args.out / "table.md").write_text(table(rows))
    print(table(rows))
    versions = {}
    for package in ("schnetpack", "mace-torch"):  # common.environment() does not know the optional extras
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    budget = {"extras": versions, "minutes_per_model": args.minutes, "preset": args.preset, "seed": args.seed,
              "recipe": "longmd train demo",
              "overrides": args.set, "parts": args.parts, "evaluate_minutes": (time.perf_counter() - start) / 60}
    write_json({"budget": budget, "rows": rows, "evaluation": metrics.get("protocol", metrics.get("options"))},
               args.out, "architectures.json")


if __name__ == "__main__":
    main()
