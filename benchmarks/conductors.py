"""The GraNNField study, rerunnable: do force errors predict usable MD of Li-ion conductors?

Trains on Li10GeP2S12 only (``longmd datagen li-conductors``), with the same budget,
  (a) EGNN conventionally (S = 1, random frame split), (b) EGNN with Dynamic Training up to S_max,
  (c) MACE from scratch when ``mace_run_train`` is installed
(the variants and budgets of ``dt_vs_conventional.py``, whose training code this reuses), then runs
``longmd evaluate`` (frames, stability, transport) on LGPS's held-out runs and on every transfer material
(Li3PS4, Li4GeS4: all their runs): force errors, stability verdicts against each material's reference (RDF-MAE
next to its noise floor, failure modes), and the -log10 sigma table (the study's Table 2). Writes
``OUT/results.json``, ``OUT/table.md`` and each material's evaluation under ``OUT/eval_<material>/``.

  python benchmarks/conductors.py --train data/lgps/lgps.extxyz.xz --transfer data/li3ps4/li3ps4.extxyz.xz \\
      data/li4ges4/li4ges4.extxyz.xz --out runs/conductors
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from common import write_json
from dt_vs_conventional import CONFIGS, _overrides, train_mace, train_variants
from longmd.config import load_config
from longmd.evaluation import EvalOptions, evaluate
from longmd.io.read import read_trajectories
from longmd.models.io import load_model
from longmd.training.setup import load_data, make_split


def material_name(path: str) -> str:
    return Path(path).name.split(".")[0]


def models_of(runs: dict, mace: dict | None, device: str) -> dict:
    models = {name: load_model(run["model"], device=device) for name, run in runs.items()}
    if mace:
        from longmd.models.mace import MACEModel

        models["mace"] = MACEModel.from_file(mace["model"], device=torch.device(device)).float()
    return models


def evaluate_all(args, models: dict, split_test: list[int]) -> dict:
    """``evaluate`` on the training material's held-out runs and on every transfer material's runs."""
    options = EvalOptions(long_steps=args.long_steps, long_runs=args.long_runs, transport_steps=args.transport_steps,
                          record_every=args.record_every, device=args.device, progress=False, seed=args.seed,
                          transport_species="Li", transport_samples=args.samples)
    out = {}
    for path, test in [(args.train, split_test), *[(p, None) for p in args.transfer]]:
        name = material_name(path)
        trajectories = read_trajectories(path)
        print(f"== evaluating on {name} ({len(trajectories)} runs{'' if test is None else ', held-out'})")
        out[name] = evaluate(models, trajectories, args.out / f"eval_{name}", test=test, options=options,
                             parts=args.parts)
    return out


def summary(metrics: dict) -> dict:
    """Per material and model: force MAE, the stability verdict, and the Table 2 row; the reference's row too."""
    out = {}
    for material, m in metrics.items():
        ref = m["reference"].get("transport", {})
        rows = {"reference": {"table": ref.get("table"),
                              "rdf_mae_noise_floor": (m["reference"].get("stability", {}).get("noise_floor")
                                                      or {}).get("rdf_mae")}}
        for name, e in m["models"].items():
            v = (e.get("stability") or {}).get("verdict") or {}
            rows[name] = {"force_mae_eV_per_A": (e.get("frames") or {}).get("force_mae"),
                          "stable": v.get("stable"), "rdf_mae": v.get("rdf_mae"),
                          "failure_modes": v.get("failure_modes"), "table": (e.get("transport") or {}).get("table")}
        out[material] = rows
    return out


def table(results: dict) -> str:
    lines = ["| material | model | force MAE (eV/Å) | verdict | RDF-MAE (floor) | failure modes "
             "| -log10 σ (T: mean ± std) |", "|---|---|---|---|---|---|---|"]
    for material, rows in results.items():
        floor = rows["reference"]["rdf_mae_noise_floor"]
        for name, r in rows.items():
            sigma = "; ".join(f"{t} K: {v[0]:.2f} ± {v[1]:.2f}" for t, v in (r.get("table") or {}).items())
            if name == "reference":
                lines.append(f"| {material} | reference | — | — | ({_f(floor)}) | — | {sigma or '—'} |")
                continue
            verdict = "—" if r["stable"] is None else ("stable" if r["stable"] else "unstable")
            lines.append(f"| {material} | {name} | {_f(r['force_mae_eV_per_A'])} | {verdict} | {_f(r['rdf_mae'])} "
                         f"({_f(floor)}) | {', '.join(r['failure_modes'] or []) or 'none'} | {sigma or '—'} |")
    return "\n".join(lines)


def _f(x) -> str:
    return "—" if x is None else f"{x:.3g}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", required=True, help="the training material's dataset (LGPS)")
    parser.add_argument("--transfer", nargs="*", default=[], help="transfer materials' datasets (Li3PS4, Li4GeS4)")
    parser.add_argument("--out", type=Path, default=Path("runs/conductors"))
    parser.add_argument("--config", default="demo", help="demo | paper (packaged configs)")
    parser.add_argument("--s-max", type=int, default=4)
    parser.add_argument("--epochs-per-s", type=int, default=10)
    parser.add_argument("--minutes", type=float, default=15.0, help="budget: wall minutes per model")
    parser.add_argument("--mace-epochs", type=int, default=50)
    parser.add_argument("--mace-channels", type=int, default=32)
    parser.add_argument("--mace-stride", type=int, default=1)
    parser.add_argument("--mace-max-l", type=int, default=1)
    parser.add_argument("--no-mace", action="store_true")
    parser.add_argument("--parts", default="frames,stability,transport")
    parser.add_argument("--long-steps", type=int, default=1000, help="steps of each stability run")
    parser.add_argument("--long-runs", type=int, default=2)
    parser.add_argument("--transport-steps", type=int, default=2000)
    parser.add_argument("--record-every", type=int, default=5)
    parser.add_argument("--samples", type=int, default=500, help="MCMC samples of kinisi's posteriors")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--set", action="append", default=[], help="extra config override SECTION.KEY=VALUE")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reuse", action="store_true", help="reuse finished training runs found in OUT")
    args = parser.parse_args(argv)
    args.data = [args.train]  # what dt_vs_conventional's training reads

    runs = train_variants(args)
    cfg = load_config(CONFIGS / f"{args.config}.yaml", _overrides(args, args.out / "eval"))
    trajectories = load_data(cfg)
    split = make_split(cfg, trajectories)
    mace = train_mace(args, trajectories, split, load_model(runs["conventional"]["model"]).cutoff)
    models = models_of(runs, mace, args.device)
    metrics = evaluate_all(args, models, sorted(split.subsets["test"]))
    results = summary(metrics)
    text = table(results)
    (args.out / "table.md").write_text(text + "\n")
    print("\n" + text)
    for run in runs.values():
        run.pop("records")
    budgets = {k: getattr(args, k) for k in ("config", "s_max", "epochs_per_s", "minutes", "mace_epochs", "seed",
                                             "long_steps", "long_runs", "transport_steps", "record_every")}
    write_json({"budgets": budgets, "runs": runs, "mace": mace, "results": results,
                "datasets": {"train": args.train, "transfer": args.transfer}}, args.out, "results.json")
    print(json.dumps(budgets))


if __name__ == "__main__":
    sys.exit(main())
