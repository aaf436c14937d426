"""What the inference tables gain: batched NVE MD of one EGNN with the exact path and with the tabulated distance
blocks (``longmd.models.inference``), interleaved in one process (best of ``--reps``), per replica count.
Writes ``OUT/inference_tables.json``.

  python benchmarks/inference_tables.py --preset paper --replicas 1,8,32 --out runs/bench
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from common import write_json
from longmd.dynamics.cores import ForceField
from longmd.dynamics.neighbor_policy import VerletNeighbors
from longmd.dynamics.propagator import build_integrator
from longmd.dynamics.rollout import rollout
from longmd.dynamics.state import MDState
from longmd.examples import resolve
from longmd.io.read import read_trajectories
from longmd.models.egnn import egnn_potential
from longmd.models.inference import inference_model


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="paper")
    p.add_argument("--replicas", default="1,8,32")
    p.add_argument("--steps", type=int, default=5, help="timed steps per repetition")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--out", type=Path, default=Path("runs/bench"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    trajectory = read_trajectories([resolve("example:h2_pd6_graphene")])[0]
    atoms, dt = trajectory.atoms(0), trajectory.timestep_fs
    base = egnn_potential(sorted({int(z) for z in atoms.numbers}), args.preset)
    models = {mode: inference_model(base, "cpu", dtype, tabulate=mode == "tables")[0] for mode in ("exact", "tables")}
    rows = []
    for replicas in [int(r) for r in args.replicas.split(",")]:
        runs = {}
        for mode, model in models.items():
            integrator = build_integrator(ForceField(model, VerletNeighbors(model.cutoff, skin=1.0)), dt)
            state = MDState.from_atoms([atoms] * replicas, dtype=dtype)
            runs[mode] = (integrator, rollout(integrator, state, 2, store=False).state)  # warm-up
        best = {mode: float("inf") for mode in runs}
        for _ in range(args.reps):
            for mode, (integrator, state) in runs.items():
                start = time.perf_counter()
                rollout(integrator, state, args.steps, store=False)
                best[mode] = min(best[mode], (time.perf_counter() - start) / args.steps)
        row = {"replicas": replicas, **{f"s_per_step_{m}": v for m, v in best.items()},
               "speedup": best["exact"] / best["tables"],
               "ms_per_replica_step_tables": 1000 * best["tables"] / replicas}
        print(f"R={replicas}: exact {1000 * best['exact']:.0f} ms/step, tables {1000 * best['tables']:.0f} ms/step "
              f"({row['speedup']:.2f}x)", flush=True)
        rows.append(row)
    write_json({"settings": {k: str(v) for k, v in vars(args).items()}, "atoms": len(atoms), "rows": rows},
               args.out, "inference_tables.json")


if __name__ == "__main__":
    main()
