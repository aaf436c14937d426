"""Mean and spread of rollout MEPA over several ``dt_vs_conventional.py`` runs (one per training seed).

  python benchmarks/aggregate_seeds.py runs/dtvc_seed*/results.json --out runs/dtvc_seeds

Writes ``OUT/seeds.json`` and ``OUT/seeds.md``. Runs must share the test rollouts (same ``--test-seed``,
data, rollout length): they are compared window for window, so a paired difference per seed is reported too.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from common import write_json


def aggregate(results: list[dict]) -> dict:
    keys = {(r["budgets"]["rollout_steps"], r["budgets"]["test_windows"], r["budgets"].get("test_seed", 0))
            for r in results}
    if len(keys) != 1:
        raise ValueError(f"runs differ in their test rollouts (steps, windows, test seed): {sorted(keys)}")
    models = sorted({m for r in results for m in r["rollout_test"]}, key=lambda m: (m == "mace", m))
    table = {}
    for model in models:
        values = {r["budgets"].get("seed", 0): r["rollout_test"][model]["mepa_mean"] for r in results
                  if model in r["rollout_test"]}
        v = np.array(list(values.values()))
        std = float(v.std(ddof=1)) if len(v) > 1 else None
        table[model] = {"per_seed": values, "mean": float(v.mean()), "std": std}
    dt = next((m for m in models if m.startswith("dt_s") and m != "dt_s1"), None)
    paired = {}
    if dt:
        for other in ("conventional", "dt_s1"):
            gains = [1 - r["rollout_test"][dt]["mepa_mean"] / r["rollout_test"][other]["mepa_mean"]
                     for r in results if other in r["rollout_test"]]
            paired[f"{dt}_vs_{other}"] = {"relative_gain_per_seed": gains, "mean": float(np.mean(gains))}
    return {"seeds": sorted(r["budgets"].get("seed", 0) for r in results), "rollout_mepa": table, "paired_gain": paired}


def markdown(summary: dict) -> str:
    seeds = summary["seeds"]
    rows = ["| model | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std (eV/Å) |",
            "|---" * (len(seeds) + 2) + "|"]
    for model, t in summary["rollout_mepa"].items():
        cells = [f"{t['per_seed'][s]:.3f}" if s in t["per_seed"] else "" for s in seeds]
        spread = f" ± {t['std']:.3f}" if t["std"] is not None else ""
        rows.append(f"| {model} | " + " | ".join(cells) + f" | {t['mean']:.3f}{spread} |")
    for name, g in summary["paired_gain"].items():
        per = ", ".join(f"{100 * x:+.1f}%" for x in g["relative_gain_per_seed"])
        rows.append(f"\n{name}: MEPA lower by {per} (mean {100 * g['mean']:+.1f}%)")
    return "\n".join(rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("runs/dtvc_seeds"))
    args = parser.parse_args(argv)
    summary = aggregate([json.loads(p.read_text()) for p in args.results])
    summary["inputs"] = [str(p) for p in args.results]
    text = markdown(summary)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "seeds.md").write_text(text + "\n")
    print(text)
    write_json(summary, args.out, "seeds.json")


if __name__ == "__main__":
    sys.exit(main())
