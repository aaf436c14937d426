"""Does Dynamic Training pay off on models converged at S = 1? Issue 16's benchmark, rerunnable and resumable.

For every training-data fraction (``--train-fractions``, the paper's Fig. 3 data efficiency) and seed:

1. **converge**: S = 1 force matching (the trajectory split of the training data; validation rollouts of the
   held-out validation trajectories) until the curriculum converges, i.e. ``patience`` epochs without
   improvement at the learning-rate floor (``--converge-epochs`` / ``--converge-minutes`` are safety caps; the
   results say whether a run converged or hit a cap).
2. **branch** from that run's checkpoint (:func:`longmd.training.checkpoints.branch_run`: model, Adam moments,
   random generators kept), every branch with the same extra budget, ``--extra-epochs`` epochs and
   ``--extra-minutes`` wall minutes, whichever comes first (both recorded):
   (a) ``conventional``: more S = 1 epochs, the curriculum restarted with the learning rate reset to
   ``lr_reset`` (``Trainer(extend=True)``), as DT's S += 1 does; (b) ``dt``: S = 2..S_max with
   ``rollout_gradient: full`` (plus ``--set-dt`` overrides, e.g. loss options); (c) ``dt_detached``: the same
   with ``rollout_gradient: detached`` (the authors' code). Each branch is scored by the best model of its own
   epochs at its last S (``best_S1.pt`` of the extension, ``best_S{S}.pt`` of DT's highest S).
3. **test**, on held-out trajectories only (``--test-data``; the script refuses trajectories that are in the
   training data): ``longmd evaluate``'s rollout part (``--rollout-starts`` NVE rollouts of ``--rollout-steps``
   steps from seeded starts, the same starts for every model and seed; MEPA per step) and its stability part
   (``--long-runs`` NVE runs of ``--long-ps`` ps: stable runs, h(r)-MAE, tracked-pair events).
4. **statistics** (:mod:`longmd.analysis.paired`): per start, the mean-over-steps MEPA of two models is
   paired; differences are averaged over seeds and bootstrapped over starts (seeds fixed), and also bootstrapped
   over seeds and starts together; the smallest detectable effect is 2.80 x the start-level standard error of
   the mean paired difference (two-sided alpha = 0.05, 80 % power, normal approximation).

Every stage lives in a directory named by a hash of its settings (``settings.json`` inside) and is marked done
by ``done.json`` (atomic writes): a rerun with the same options skips finished stages and resumes an
interrupted training from its checkpoint (wall budgets count the minutes already spent); changed settings make
new directories. The evaluations resume through ``longmd evaluate``'s own cache. Outputs: ``OUT/results.json``,
``OUT/table.md``, ``OUT/mepa_vs_step_f<fraction>.png`` (mean over seeds and starts, 95 % bootstrap band over
starts), rewritten after every finished stage.

Model size: the demo's small EGNN (18,369 parameters). Measured on the shared 2-core machine with one thread
(load ~2): an S = 1 epoch of 256 windows costs ~25 s for it and ~54 s for a 105,089-parameter EGNN (hidden 64,
64 Fourier features, 3 layers); the schedule below (lr 3e-3 halved on plateaus of 5 epochs down to 1e-4, then 5
more epochs at the floor) needs ~60-120 epochs, so only the small model converges within ~1 h.

  python benchmarks/dt_validity.py --out runs/dt_validity \
      --test-data runs/h2pd6_heldout/h2_pd6_graphene.extxyz.xz
  python benchmarks/dt_validity.py ... --seeds 0 --train-fractions 1.0 --stages train,rollout   # a part of it
  python benchmarks/dt_validity.py ... --stages report                                          # tables only
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from common import done, environment, mark_done, per_start_means, records, stage_dir
from longmd.analysis.paired import bootstrap_curve_band, paired_comparison
from longmd.analysis.plots import plot_mepa_vs_step
from longmd.atomic import atomic_write_text
from longmd.config import Config, load_config
from longmd.data.trajectory import Trajectory
from longmd.evaluation.core import evaluate
from longmd.evaluation.options import EvalOptions
from longmd.examples import resolve
from longmd.io.read import read_trajectories
from longmd.models.io import load_model
from longmd.training.checkpoints import NAME as CHECKPOINT
from longmd.training.checkpoints import branch_run, read_checkpoint
from longmd.training.run_log import trained_minutes
from longmd.training.setup import load_data
from longmd.training.trainer import Trainer

CONFIG = Path(__file__).resolve().parents[1] / "src" / "longmd" / "configs" / "demo.yaml"
# fresh CHGNet trajectories of the example's recipe, never trained on, made (resumable) by
#   longmd datagen h2-pd6-graphene runs/h2pd6_heldout --trajectories 8 --seed 2027 --workers 2
HELD_OUT = "runs/h2pd6_heldout/h2_pd6_graphene.extxyz.xz"
BRANCHES = ("conventional", "dt", "dt_detached")
MODELS = ("converged", *BRANCHES)  # the models of the main comparison (stability too)
COMPARISONS = (("conventional", "dt"), ("conventional", "dt_detached"), ("dt_detached", "dt"),
               ("converged", "conventional"), ("converged", "dt"))
SCHEDULE = [  # on top of demo.yaml: every training key of the protocol that is not an option below
    "data.test_fraction=0", "data.val_fraction=0.125", "training.batch_size=8", "training.windows_per_epoch=256",
    "training.lr=3e-3", "training.lr_factor=0.5", "training.patience=5", "training.min_lr=1e-4",
    "training.lr_reset=1e-3", "training.val_length=60", "training.val_windows=16", "training.progress=false",
    "model.three_body=null",  # the EGNN alone, as measured (the demo's default adds a 3-body term since 2026-12-03)
]


# ------------------------------------------------------------------------------------------------ stages
def training_config(args, seed: int, fraction: float, out: Path, *extra: str) -> Config:
    return load_config(CONFIG, [*SCHEDULE, f"data.paths=[{','.join(args.train_data)}]",
                                f"data.train_fraction={fraction}", f"training.seed={seed}",
                                f"training.device={args.device}", f"training.threads={args.threads}",
                                *args.set, *extra, f"out={out}"])


def converge(args, root: Path, seed: int, fraction: float) -> tuple[Path, dict]:
    settings = {"stage": "converge", "seed": seed, "train_fraction": fraction, "data": args.train_data,
                "set": args.set, "schedule": SCHEDULE, "max_epochs": args.converge_epochs,
                "max_minutes": args.converge_minutes}
    path = stage_dir(root, "converge", settings)
    if (result := done(path)) is not None:
        return path, result
    run = path / "run"
    cfg = training_config(args, seed, fraction, run, "training.mode=dynamic", "training.s_max=1",
                          "training.max_epochs_per_s=null", f"training.max_epochs={args.converge_epochs}",
                          f"training.max_minutes={args.converge_minutes}")  # the run's budget, resumes included
    resume = (run / CHECKPOINT).exists()
    print(f"== converge seed {seed} fraction {fraction}: {run}" + (" (resumed)" if resume else ""), flush=True)
    Trainer(cfg, resume=resume).run()
    state = read_checkpoint(run)
    recs = records(run)
    finished = state.get("finished") or ""
    return path, mark_done(path, {
        "run": str(run), "epochs": len(recs), "minutes": trained_minutes(recs),
        "converged": finished.startswith("no improvement"), "stop": finished or "a cap (epochs or minutes)",
        "best_val_mepa": min(r["val_mepa"] for r in recs), "model": str(run / "best.pt"),
        "val_curve": [[r["epoch"], r["lr"], r["val_mepa"]] for r in recs],
    })


def branch(args, root: Path, name: str, source: dict, converge_key: str, seed: int,
           fraction: float) -> tuple[Path, dict]:
    """One branch of the converged run (module docstring), with the shared extra budget."""
    changes: dict = {}
    extra = [f"training.max_epochs={source['epochs'] + args.extra_epochs}"]
    if name == "conventional":
        extra += ["training.mode=dynamic", "training.s_max=1"]
    else:
        per_s = args.epochs_per_s or math.ceil(args.extra_epochs / max(1, args.s_max - 1))
        extra += ["training.mode=dynamic", f"training.s_max={args.s_max}", f"training.max_epochs_per_s={per_s}"]
        overrides = [*args.set_dt, *(["training.rollout_gradient=detached"] if name == "dt_detached" else [])]
        probe = load_config(CONFIG, overrides)  # checked and typed like any override
        keys = [o.split("=", 1)[0].removeprefix("training.") for o in overrides]
        changes = {k: getattr(probe.training, k) for k in keys}
    settings = {"stage": name, "from": converge_key, "extra_epochs": args.extra_epochs,
                "extra_minutes": args.extra_minutes, "s_max": args.s_max if name != "conventional" else 1,
                "epochs_per_s": args.epochs_per_s, "changes": changes}
    path = stage_dir(root, name, settings)
    if (result := done(path)) is not None:
        return path, result
    run = path / "run"
    if not (run / CHECKPOINT).exists():
        branch_run(Path(source["run"]), run, changes)
    # budgets count the whole run (as max_epochs): the converged run's epochs plus the branch's own
    spent = trained_minutes(r for r in records(run) if r["epoch"] >= source["epochs"])
    cfg = training_config(args, seed, fraction, run, *extra,
                          *[f"training.{k}={json.dumps(v)}" for k, v in changes.items()],
                          f"training.max_minutes={source['minutes'] + args.extra_minutes}")
    print(f"== branch {name}: {run} (budget {args.extra_epochs} epochs, {args.extra_minutes - spent:.1f} of "
          f"{args.extra_minutes} min left)", flush=True)
    Trainer(cfg, resume=True, extend=name == "conventional").run()
    recs = [r for r in records(run) if r["epoch"] >= source["epochs"]]
    top = max((r["S"] for r in recs), default=1)
    model = run / f"best_S{top}.pt"
    return path, mark_done(path, {
        "run": str(run), "epochs": len(recs), "minutes": trained_minutes(recs),
        "reached_S": top, "model": str(model if model.exists() else run / "best.pt"),
        "best_val_mepa_last_S": min((r["val_mepa"] for r in recs if r["S"] == top), default=None),
        "per_S": {s: {"epochs": sum(r["S"] == s for r in recs),
                      "best_val_mepa": min(r["val_mepa"] for r in recs if r["S"] == s),
                      "model": str(run / f"best_S{s}.pt")} for s in sorted({r["S"] for r in recs})},
        "stop": (read_checkpoint(run).get("finished") or "a cap (epochs or minutes)"),
        "val_curve": [[r["epoch"], r["S"], r["lr"], r["val_mepa"]] for r in recs],
    })


# -------------------------------------------------------------------------------------------------- test
def fingerprint(tr: Trajectory) -> str:
    """Atoms and the first frame's positions (0.1 mÅ): the same trajectory under any name or file."""
    digest = hashlib.sha1(np.asarray(tr.numbers, dtype=np.int64).tobytes())
    digest.update(np.round(np.asarray(tr.positions[0], dtype=np.float64), 4).tobytes())
    return digest.hexdigest()


def held_out(args) -> list[Trajectory]:
    """The test trajectories; refuses any that is also a training trajectory (or a training file)."""
    if not args.test_data:
        raise SystemExit("dt_validity: --test-data is required (held-out trajectories, never the training data)")
    same_files = {str(resolve(p).resolve()) for p in args.train_data} & {str(resolve(p).resolve())
                                                                         for p in args.test_data}
    if same_files:
        raise SystemExit(f"dt_validity: refusing to score on training data: {sorted(same_files)}")
    test = read_trajectories([resolve(p) for p in args.test_data])
    training = load_data(load_config(CONFIG, [f"data.paths=[{','.join(args.train_data)}]"]))
    train = {fingerprint(tr): tr.name for tr in training}
    overlap = [f"{tr.name} = training {train[fingerprint(tr)]}" for tr in test if fingerprint(tr) in train]
    if overlap:
        raise SystemExit(f"dt_validity: refusing to score on training trajectories: {overlap}")
    return test


def eval_options(args, part: str) -> EvalOptions:
    """The protocol of ``part`` (rollout or stability) from the options."""
    common = {"seed": args.test_seed, "device": args.device, "dtype": args.eval_dtype, "progress": False,
              "threads": args.threads, "batch_size": args.rollout_starts}
    if part == "rollout":
        return EvalOptions(**common, rollout_steps=args.rollout_steps, rollout_starts=args.rollout_starts)
    steps = int(round(args.long_ps * 1000 / args.timestep_fs))
    return EvalOptions(**common, long_steps=steps, long_runs=args.long_runs, record_every=args.record_every)


def test(args, seed_root: Path, part: str, models: dict[str, str], test_data: list[Trajectory]) -> dict:
    """``longmd evaluate``'s ``part`` for these models (name -> file), resumed from its own cache."""
    opts = eval_options(args, part)
    out = stage_dir(seed_root, f"test_{part}", {"options": opts.to_dict(), "data": args.test_data})
    loaded = {name: load_model(path, device=args.device) for name, path in models.items()}
    print(f"== test {part}: {', '.join(models)} -> {out}", flush=True)
    metrics = evaluate(loaded, test_data, out, parts=part, options=opts, specs=models, resume=True)
    return {name: m[part] for name, m in metrics["models"].items()}


# ------------------------------------------------------------------------------------------------ report
def summarize(args, results: dict) -> dict:
    """Statistics of every fraction over the seeds that have all the models compared."""
    summary = {}
    for fraction, seeds in results.items():
        rollouts = {s: r.get("rollout", {}) for s, r in seeds.items()}
        names = sorted({m for r in rollouts.values() for m in r})
        table = {m: {"per_seed": {s: r[m]["mepa_mean"] for s, r in rollouts.items() if m in r}} for m in names}
        for m, t in table.items():
            v = np.array(list(t["per_seed"].values()))
            t["mean"] = float(v.mean())
            t["std_over_seeds"] = float(v.std(ddof=1)) if len(v) > 1 else None
            t["failed"] = sum(r[m]["failed"] for r in rollouts.values() if m in r)
        comparisons = {}
        for base, other in COMPARISONS:
            common = [s for s, r in rollouts.items() if base in r and other in r]
            if not common:
                continue
            a = np.stack([per_start_means(rollouts[s][base]) for s in common])
            b = np.stack([per_start_means(rollouts[s][other]) for s in common])
            comparisons[f"{other}_vs_{base}"] = {"seeds": common, **paired_comparison(a, b, n_boot=args.n_boot)}
        stability = {}
        for s, r in seeds.items():
            for m, st in r.get("stability", {}).items():
                into = stability.setdefault(m, {"stable_runs": 0, "n_runs": 0, "hr_mae": [], "events": 0,
                                                "simulated_ps": 0.0, "seeds": []})
                into["stable_runs"] += st["stable_runs"]
                into["n_runs"] += st["n_runs"]
                into["seeds"].append(s)
                if st.get("hr_mae") is not None:
                    into["hr_mae"].append(st["hr_mae"])
                into["events"] += sum(p["events"] for p in st.get("tracked", []))
                into["simulated_ps"] += sum(x["time_fs"] for x in st["runs"]) / 1000
        for st in stability.values():
            st["hr_mae_mean"] = float(np.mean(st["hr_mae"])) if st["hr_mae"] else None
        summary[fraction] = {"rollout_mepa": table, "paired": comparisons, "stability": stability}
    return summary


def plot(results: dict, out: Path, n_boot: int, timestep_fs: float) -> list[str]:
    """MEPA vs step per fraction: per start the mean over seeds, then the mean and 95 % bootstrap band of starts."""
    paths = []
    for fraction, seeds in results.items():
        curves = {}
        for m in MODELS:
            per_seed = [np.asarray(r["rollout"][m]["curves"]["per_start_mepa"]) for r in seeds.values()
                        if m in r.get("rollout", {})]
            if per_seed:
                curves[f"{m} ({len(per_seed)} seeds)"] = bootstrap_curve_band(np.mean(per_seed, axis=0), n_boot)
        if curves:
            path = out / f"mepa_vs_step_f{fraction}.png"
            plot_mepa_vs_step(curves, path, timestep_fs=timestep_fs,
                              band_label="95 % CI, bootstrap")
            paths.append(str(path))
    return paths


def _ci(c: tuple[float, float], scale: float = 1.0, unit: str = "") -> str:
    return f"[{scale * c[0]:+.3g}, {scale * c[1]:+.3g}]{unit}"


def markdown(summary: dict, training: dict, args) -> str:
    rows = [f"Held-out test: {args.test_data}; {args.rollout_starts} NVE rollouts x {args.rollout_steps} steps "
            f"(same starts for every model and seed); stability {args.long_runs} x {args.long_ps} ps NVE.", ""]
    for fraction, s in summary.items():
        rows += [f"### training fraction {fraction}", "", "| model | " + " | ".join(
            f"seed {k}" for k in sorted({k for t in s["rollout_mepa"].values() for k in t["per_seed"]}))
            + " | mean (eV/Å) | failed |", ""]
        seeds = sorted({k for t in s["rollout_mepa"].values() for k in t["per_seed"]})
        rows[-1] = "|---" * (len(seeds) + 3) + "|"
        for m, t in s["rollout_mepa"].items():
            cells = [f"{t['per_seed'][k]:.4f}" if k in t["per_seed"] else "" for k in seeds]
            rows.append(f"| {m} | " + " | ".join(cells) + f" | {t['mean']:.4f} | {t['failed']} |")
        rows += ["", "| comparison (other vs base) | seeds | Δ mean (eV/Å) | 95% CI, starts | 95% CI, seeds x starts "
                 "| relative | 95% CI, starts | detectable (80% power) | other lower on |", "|---" * 9 + "|"]
        for name, c in s["paired"].items():
            rows.append(f"| {name} | {len(c['seeds'])} | {c['difference']:+.4f} | {_ci(c['ci_start_level'])} | "
                        f"{_ci(c['ci_seed_and_start_level'])} | {100 * c['relative']:+.1f}% | "
                        f"{_ci(c['relative_ci_start_level'], 100, '%')} | {c['detectable_effect']:.4f} "
                        f"({100 * c['detectable_relative']:.1f}%) | {100 * c['other_lower_fraction_of_starts']:.0f}% "
                        "of starts |")
        if s["stability"]:
            rows += ["", "| model | stable runs | h(r)-MAE (mean over seeds) | tracked-pair events | simulated ps |",
                     "|---|---|---|---|---|"]
            for m, st in s["stability"].items():
                hr = "" if st["hr_mae_mean"] is None else f"{st['hr_mae_mean']:.4g}"
                rows.append(f"| {m} | {st['stable_runs']}/{st['n_runs']} | {hr} | {st['events']} | "
                            f"{st['simulated_ps']:.1f} |")
        rows.append("")
    rows += ["### training", "", "| fraction | seed | stage | epochs | minutes | stop |", "|---|---|---|---|---|---|"]
    for fraction, seeds in training.items():
        for seed, stages in seeds.items():
            for name, st in stages.items():
                rows.append(f"| {fraction} | {seed} | {name} | {st['epochs']} | {st['minutes']:.1f} | {st['stop']} |")
    return "\n".join(rows)


def write_outputs(args, results: dict, training: dict) -> None:
    summary = summarize(args, results)
    plots = plot(results, args.out, min(args.n_boot, 2000), args.timestep_fs)
    table = markdown(summary, training, args)
    atomic_write_text(args.out / "table.md", table + "\n")
    budgets = {k: v for k, v in vars(args).items() if k != "stages"}
    atomic_write_text(args.out / "results.json", json.dumps(
        {"environment": environment(), "budgets": budgets, "schedule": SCHEDULE, "training": training,
         "summary": summary, "plots": plots}, indent=2, default=str) + "\n")
    print(f"wrote {args.out / 'results.json'}, {args.out / 'table.md'}", flush=True)


# -------------------------------------------------------------------------------------------------- main
def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/dt_validity"))
    p.add_argument("--train-data", nargs="+", default=["example:h2_pd6_graphene"], help="training trajectories")
    p.add_argument("--test-data", nargs="+", default=[HELD_OUT] if Path(HELD_OUT).exists() else [],
                   help=f"held-out test trajectories (default {HELD_OUT}: `longmd datagen h2-pd6-graphene "
                   "runs/h2pd6_heldout --trajectories 8 --seed 2027 --workers 2`)")
    p.add_argument("--seeds", default="0,1,2", help="training seeds, comma-separated")
    p.add_argument("--train-fractions", default="1.0,0.5", help="fractions of the training trajectories")
    p.add_argument("--s-max", type=int, default=4)
    p.add_argument("--converge-epochs", type=int, default=400, help="safety cap of the S = 1 convergence")
    p.add_argument("--converge-minutes", type=float, default=150.0, help="safety cap of the S = 1 convergence")
    p.add_argument("--extra-epochs", type=int, default=60, help="budget of every branch: epochs")
    p.add_argument("--extra-minutes", type=float, default=60.0, help="budget of every branch: wall minutes")
    p.add_argument("--epochs-per-s", type=int, default=None,
                   help="DT branches: cap per S (default extra_epochs / (s_max - 1), rounded up)")
    p.add_argument("--set", action="append", default=[], help="training override for every stage, SECTION.KEY=VALUE")
    p.add_argument("--set-dt", action="append", default=[],
                   help="training.KEY=VALUE for the DT branches only (e.g. training.position_weight=1, "
                   "training.first_step_weight=1, training.rollout_gradient=truncated:2)")
    p.add_argument("--rollout-starts", type=int, default=64)
    p.add_argument("--rollout-steps", type=int, default=300)
    p.add_argument("--long-runs", type=int, default=16)
    p.add_argument("--long-ps", type=float, default=20.0)
    p.add_argument("--record-every", type=int, default=20, help="steps between stored frames of stability runs")
    p.add_argument("--eval-dtype", default="float32", help="dtype of the tests (float32: half the cost of float64)")
    p.add_argument("--test-seed", type=int, default=0, help="seed of the test starts (keep fixed)")
    p.add_argument("--n-boot", type=int, default=10000)
    p.add_argument("--per-s", action=argparse.BooleanOptionalAction, default=True,
                   help="also rollout-test the best model of every S of the dt branch")
    p.add_argument("--stages", default="train,rollout,stability,report",
                   help="what to run now: train, rollout, stability, report (comma-separated)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.train_fractions = [float(f) for f in args.train_fractions.split(",")]
    args.stages = set(args.stages.split(","))
    for key in args.set_dt:
        if not key.startswith("training."):
            p.error(f"--set-dt {key}: only training keys")
    return args


def main(argv=None) -> None:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    test_data = held_out(args) if args.stages & {"rollout", "stability"} else []
    args.timestep_fs = test_data[0].timestep_fs if test_data else 0.5  # the example's
    results: dict = {}
    training: dict = {}
    plan = [(f, s) for f in args.train_fractions for s in args.seeds]
    phases = [p for p in ("rollout", "stability") if p in args.stages]
    for phase in phases or [None]:  # every rollout test first: the main comparison comes early
        for fraction, seed in plan:
            seed_root = args.out / f"fraction{fraction}" / f"seed{seed}"
            seed_root.mkdir(parents=True, exist_ok=True)
            atomic_write_text(seed_root / "seed.json", json.dumps({"seed": seed, "train_fraction": fraction}) + "\n")
            stages = training.setdefault(fraction, {}).setdefault(seed, {})
            if "train" not in args.stages and not stages:
                stages.update(_finished(seed_root))
            if "train" in args.stages and "converged" not in stages:
                started = time.perf_counter()
                path, conv = converge(args, seed_root, seed, fraction)
                stages["converged"] = conv
                for name in BRANCHES:
                    stages[name] = branch(args, seed_root, name, conv, path.name, seed, fraction)[1]
                print(f"== trained seed {seed} fraction {fraction} ({(time.perf_counter() - started) / 60:.1f} min)")
            if phase is None or not all(m in stages for m in MODELS):
                continue
            models = {m: stages[m]["model"] for m in MODELS}
            if phase == "rollout" and args.per_s:
                models |= {f"dt_S{s}": v["model"] for s, v in stages["dt"]["per_S"].items()
                           if int(s) < stages["dt"]["reached_S"]}
            results.setdefault(fraction, {}).setdefault(seed, {})[phase] = test(args, seed_root, phase, models,
                                                                                  test_data)
            _collect(args, results, fraction, seed, seed_root)
            write_outputs(args, results, training)
    if "report" in args.stages:
        for fraction, seed in plan:
            _collect(args, results, fraction, seed, args.out / f"fraction{fraction}" / f"seed{seed}")
        write_outputs(args, results, training)


def _finished(seed_root: Path) -> dict:
    """Finished training stages found on disk (for a report without training)."""
    out = {}
    for marker in sorted(seed_root.glob("*/done.json")):
        kind = json.loads((marker.parent / "settings.json").read_text())["stage"]
        if kind in ("converge", *BRANCHES):
            out["converged" if kind == "converge" else kind] = json.loads(marker.read_text())
    return out


def _collect(args, results: dict, fraction: float, seed: int, seed_root: Path) -> None:
    """Test results already on disk for this protocol (finished models only), into ``results``."""
    for part in ("rollout", "stability"):
        opts = eval_options(args, part)
        key = {"options": opts.to_dict(), "data": args.test_data}
        for d in seed_root.glob(f"test_{part}-*"):
            if json.loads((d / "settings.json").read_text()) != json.loads(json.dumps(key, default=str)):
                continue
            metrics = d / "metrics.json"
            if metrics.exists():
                found = {n: m[part] for n, m in json.loads(metrics.read_text())["models"].items() if part in m}
                results.setdefault(fraction, {}).setdefault(seed, {}).setdefault(part, {}).update(found)


if __name__ == "__main__":
    sys.exit(main())
