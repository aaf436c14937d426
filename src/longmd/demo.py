"""``longmd demo`` / ``make demo``: the main job on the embedded example, end to end.

1. Train a small EGNN with a 3-body term by Dynamic Training (S = 1..4) on the H2/Pd6@graphene trajectories
   (``configs/demo.yaml``; held-out validation and test trajectories).
2. Evaluate the best DT model beside the best S = 1 model of the same run (ordinary force matching) on
   the held-out test trajectories: rollout test (MEPA per step), single-frame errors, a stability run.
3. Print where the results and plots are.

Interrupted demos resume (``--resume``, or automatically when the run directory holds a checkpoint).
"""

from __future__ import annotations

import time
from pathlib import Path

from longmd.config import load_config

CONFIG = Path(__file__).parent / "configs" / "demo.yaml"


def run_demo(out: Path, config: str | Path | None = None, resume: bool = False, threads: int | None = None) -> int:
    """Train, then evaluate, in ``out``; ``threads`` overrides the config's ``training.threads`` for both."""
    from longmd.evaluation import evaluate_run
    from longmd.training.trainer import train

    start = time.perf_counter()
    train_dir = out / "train"
    overrides = [f"out={train_dir}"] + ([] if threads is None else [f"training.threads={threads}"])
    cfg = load_config(config or CONFIG, overrides)
    resume = resume or (train_dir / "checkpoint.pt").exists()
    if resume and (train_dir / "checkpoint.pt").exists():
        print(f"resuming the demo's training in {train_dir}")
    result = train(cfg, resume=resume and (train_dir / "checkpoint.pt").exists())
    eval_dir = out / "evaluate"
    models = {f"DT (best, S={result.best_s})": train_dir / "best.pt", "S=1 (force matching)": train_dir / "best_S1.pt"}
    report = evaluate_run(models, cfg, train_dir / "split.json", eval_dir, run_dir=train_dir)
    minutes = (time.perf_counter() - start) / 60
    print(f"\nlongmd demo finished in {minutes:.1f} min")
    print(f"  training run:      {train_dir}/ (learning_curve.png, metrics.csv, best.pt, best_S*.pt)")
    print(f"  evaluation:        {eval_dir}/ ({report.name}, metrics.json, *.png)")
    return 0
