"""Does Dynamic Training give better dynamics? The DT paper's Table 1 and Figures 3-4, rerunnable.

On the same training trajectories, trains
  (a) EGNN conventionally (S = 1, MEPA loss, random 95/5 frame split of the training trajectories),
  (b) EGNN with DT at S = 1 (trajectory split),
  (c) EGNN with DT up to S_max,
  (d) MACE from scratch with its default weighted-MSE loss, when ``mace_run_train`` is installed,
then runs the rollout test of ``longmd evaluate`` (NVE from held-out starts, MEPA per step against the
reference) for all of them on the same held-out test trajectories. Writes ``OUT/results.json``,
``OUT/table.md``, ``OUT/mepa_vs_step.png`` and ``OUT/val_best_per_S.png``. Budgets (epochs per S, minutes
per model) are options and recorded, so comparisons are fair.

  python benchmarks/dt_vs_conventional.py --out runs/dt_vs_conv                      # CPU, demo-sized
  python benchmarks/dt_vs_conventional.py --config paper --s-max 11 --minutes 120 --device cuda --out runs/paper
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from common import mace_frames, mace_run_train_exe, run_mace_train, write_json
from longmd.analysis.plots import plot_mepa_vs_step
from longmd.analysis.rollout_test import rollout_errors
from longmd.config import load_config
from longmd.data.windows import Window
from longmd.models.io import load_model
from longmd.training.run_log import trained_minutes
from longmd.training.setup import load_data, make_split
from longmd.training.trainer import Trainer

CONFIGS = Path(__file__).resolve().parents[1] / "src" / "longmd" / "configs"


def _overrides(args, out: Path, *extra: str) -> list[str]:
    base = [f"out={out}", f"training.device={args.device}", "training.progress=false", f"training.seed={args.seed}",
            f"training.max_epochs_per_s={args.epochs_per_s}", f"training.max_minutes={args.minutes}",
            "model.three_body=null"]  # the EGNN alone, as measured (docs/results.md); --set model.three_body=auto
    if args.data:
        base.append(f"data.paths=[{','.join(args.data)}]")
    return [*base, *args.set, *extra]


def train_variants(args) -> dict[str, dict]:
    config = CONFIGS / f"{args.config}.yaml"
    # Equal epoch budgets: the single-frame models get as many epochs as DT spends over all its S.
    single = f"training.max_epochs_per_s={args.epochs_per_s * args.s_max}"
    variants = {
        "conventional": ["training.mode=conventional", "data.split=frames", "data.val_fraction=0.05", single],
        "dt_s1": ["training.mode=dynamic", "training.s_max=1", single],
        f"dt_s{args.s_max}": ["training.mode=dynamic", f"training.s_max={args.s_max}"],
    }
    runs = {}
    for name, extra in variants.items():
        out = args.out / name
        cfg = load_config(config, _overrides(args, out, *extra))
        log = out / "metrics.jsonl"
        if args.reuse and (out / "best.pt").exists() and log.exists():
            print(f"== reusing the finished run {out}")
            records = [json.loads(line) for line in log.read_text().splitlines()]
        else:
            print(f"== training {name} -> {out}")
            records = Trainer(cfg, log=print).run().records
        best = min(records, key=lambda r: r["val_mepa"])
        runs[name] = {"model": str(out / "best.pt"), "out": str(out), "epochs": len(records),
                      "best_val_mepa": best["val_mepa"], "best_S": best["S"],
                      "train_minutes": trained_minutes(records),
                      "records": records, "config": cfg.to_dict()}
    return runs


def train_mace(args, trajectories, split, cutoff: float) -> dict | None:
    """MACE from scratch through ``mace_run_train`` (:func:`common.run_mace_train`; nothing downloaded), on
    the conventional EGNN's data: every non-test trajectory, MACE's own random 5 % for validation."""
    if mace_run_train_exe() is None or args.no_mace:
        return None
    out = (args.out / "mace").resolve()  # mace_run_train runs inside it
    previous = out / "mace.json"
    if args.reuse and (out / "mace.model").exists() and previous.exists():
        print(f"== reusing the finished MACE run {out}")
        return json.loads(previous.read_text())
    frames = mace_frames(trajectories, [t for t in range(len(trajectories)) if t not in split.subsets["test"]],
                         args.mace_stride)
    run = run_mace_train(out, frames, 0.05, channels=args.mace_channels, max_l=args.mace_max_l, r_max=cutoff,
                         seed=args.seed, max_epochs=args.mace_epochs, device=args.device, extra=("--batch_size=8",))
    run = {"model": str(out / "mace.model"), **run, "epochs": args.mace_epochs, "frame_stride": args.mace_stride}
    previous.write_text(json.dumps(run, indent=2) + "\n")
    return run


def test_windows(trajectories, split, steps: int, per_traj: int, seed: int) -> list[Window]:
    rng = np.random.default_rng(seed)
    windows = []
    for t in sorted(split.subsets["test"]):
        length = min(steps + 1, len(trajectories[t]))
        starts = rng.choice(len(trajectories[t]) - length + 1, size=per_traj, replace=False)
        windows += [Window(t, int(s), length) for s in sorted(starts)]
    lengths = {w.length for w in windows}
    if len(lengths) > 1:  # trajectories of different lengths: use the shortest common length
        shortest = min(lengths)
        windows = [Window(w.traj, w.start, shortest) for w in windows]
    return windows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="*", help="reference trajectories (default: the embedded example)")
    parser.add_argument("--out", type=Path, default=Path("runs/dt_vs_conventional"))
    parser.add_argument("--config", default="demo", help="demo | paper (packaged configs)")
    parser.add_argument("--s-max", type=int, default=4)
    parser.add_argument("--epochs-per-s", type=int, default=10,
                        help="budget: epochs at each S of DT; single-frame models get epochs_per_s * s_max")
    parser.add_argument("--minutes", type=float, default=15.0, help="budget: wall minutes per model")
    parser.add_argument("--rollout-steps", type=int, default=300)
    parser.add_argument("--starts-per-trajectory", type=int, default=4)
    parser.add_argument("--mace-epochs", type=int, default=50, help="budget of (d): mace_run_train epochs")
    parser.add_argument("--mace-channels", type=int, default=32)
    parser.add_argument("--mace-stride", type=int, default=1, help="train MACE on every k-th frame (CPU budgets)")
    parser.add_argument("--mace-max-l", type=int, default=1)
    parser.add_argument("--no-mace", action="store_true", help="skip (d) even when mace-torch is installed")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--set", action="append", default=[], help="extra config override SECTION.KEY=VALUE")
    parser.add_argument("--seed", type=int, default=0, help="training seed of every model")
    parser.add_argument("--reuse", action="store_true", help="reuse finished runs found in OUT (no retraining)")
    parser.add_argument("--test-seed", type=int, default=0, help="seed of the test rollout starts (keep fixed)")
    args = parser.parse_args(argv)

    runs = train_variants(args)
    cfg = load_config(CONFIGS / f"{args.config}.yaml", _overrides(args, args.out / "eval"))
    trajectories = load_data(cfg)
    split = make_split(cfg, trajectories)
    mace = train_mace(args, trajectories, split, load_model(runs["conventional"]["model"]).cutoff)  # same r_max
    windows = test_windows(trajectories, split, args.rollout_steps, args.starts_per_trajectory, args.test_seed)
    device = torch.device(args.device)
    models = {name: load_model(run["model"], device=str(device)) for name, run in runs.items()}
    if mace:
        from longmd.models.mace import MACEModel

        models["mace"] = MACEModel.from_file(mace["model"], device=device).float()
        mace["parameters"] = models["mace"].n_parameters()
    results, curves = {}, {}
    for name, model in models.items():
        errors = rollout_errors(model, trajectories, windows, batch_size=len(windows), device=device)
        results[name] = errors.summary()
        results[name]["mepa_per_step"] = errors.mepa.tolist()
        curves[name] = errors.mepa
        print(f"{name:14s} rollout MEPA {errors.mean_mepa:.4f} eV/Å (failed rollouts: {errors.failed})")
    dt = runs[f"dt_s{args.s_max}"]
    per_s = {}
    for s in range(1, args.s_max + 1):
        path = Path(dt["out"]) / f"best_S{s}.pt"
        if path.exists():
            val = [r["val_mepa"] for r in dt["records"] if r["S"] == s]
            test = rollout_errors(load_model(path, device=str(device)), trajectories, windows,
                                  batch_size=len(windows), device=device)
            per_s[s] = {"val_mepa": float(min(val)), "test_rollout_mepa": test.mean_mepa}
    plot_mepa_vs_step(curves, args.out / "mepa_vs_step.png", timestep_fs=trajectories[0].timestep_fs)
    _plot_per_s(per_s, args.out / "val_best_per_S.png")
    table = _table(results, runs, mace, windows)
    (args.out / "table.md").write_text(table + "\n")
    print("\n" + table)
    budgets = {"epochs_per_s": args.epochs_per_s, "minutes_per_model": args.minutes, "config": args.config,
               "seed": args.seed, "test_seed": args.test_seed, "mace_epochs": args.mace_epochs if mace else None,
               "s_max": args.s_max, "rollout_steps": windows[0].length - 1, "test_windows": len(windows)}
    for run in runs.values():
        run.pop("records")
    write_json({"budgets": budgets, "runs": runs, "mace": mace, "rollout_test": results,
                "best_model_per_S": per_s}, args.out, "results.json")


def _table(results, runs, mace, windows) -> str:
    rows = [f"Rollout test: {len(windows)} NVE rollouts of {windows[0].length - 1} steps from held-out trajectories.",
            "", "| model | rollout MEPA (eV/Å) | final position deviation (Å) | failed | train minutes |",
            "|---|---|---|---|---|"]
    for name, r in results.items():
        minutes = runs[name]["train_minutes"] if name in runs else (mace or {}).get("train_minutes", float("nan"))
        rows.append(f"| {name} | {r['mepa_mean']:.4f} | {r['position_deviation_final_A']:.3f} | {r['failed']} | "
                    f"{minutes:.1f} |")
    return "\n".join(rows)


def _plot_per_s(per_s: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not per_s:
        return
    s = sorted(per_s)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(s, [per_s[k]["val_mepa"] for k in s], "o-", label="validation MEPA (best of S)")
    ax.plot(s, [per_s[k]["test_rollout_mepa"] for k in s], "s--", label="test rollout MEPA")
    ax.set_xlabel("S (training subsequence length)")
    ax.set_ylabel("MEPA (eV/Å)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
