"""ns/day of one model and system through LAMMPS (longmd forces by fix external) and through longmd's own engine
(``simulate``), in one run; writes ``OUT/lammps_speed.json``.

Both runs start from the same frame (a LAMMPS data file, read back for longmd) and do NVE with the same timestep;
each is timed after a short warm-up, best of ``--repeats``. LAMMPS's time includes its own integration and the
callback (the share spent in longmd's model evaluation is reported); longmd's own engine keeps Verlet lists with a
skin, the bridge builds its neighbour list at every call.

Examples:
  python benchmarks/lammps_speed.py --out runs/bench                    # untrained small EGNN, 57 atoms, CPU
  python benchmarks/lammps_speed.py --out runs/bench --model runs/demo/model.pt --steps 500 --threads 2
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from ase.data import chemical_symbols
from ase.io import read

from common import write_json
from longmd.dynamics.simulate import simulate
from longmd.engines.lammps import run_lammps, write_lammps_data
from longmd.models.egnn import egnn_potential
from longmd.models.io import open_model

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "examples" / "lammps" / "h2_pd6_graphene.data"


def _lammps(model, data: Path, steps: int, dtype, boundary: str) -> dict:
    commands = ["units metal", "atom_style atomic", f"boundary {boundary}", f"read_data {data}",
                "timestep 0.0005", "fix nve all nve", "thermo 0", f"run {steps}"]
    result = run_lammps(model, commands, dtype=dtype, log=lambda _: None)
    return {"wall_s": result.wall_s, "steps": result.steps, "ns_per_day": result.ns_per_day,
            "force_s": result.force_s, "force_share": result.force_s / result.wall_s}


def _longmd(model, atoms, steps: int, dtype) -> dict:
    # An untrained model lets atoms meet: the blow-up checks are loosened (this measures speed, not physics).
    result = simulate(model, atoms, steps=steps, timestep_fs=0.5, init_velocities="given", dtype=dtype,
                      progress=False, min_distance=0.05, max_temperature_K=1e7)
    return {"wall_s": result.wall_s, "steps": result.steps, "ns_per_day": result.ns_per_day,
            "neighbor_builds": result.neighbor_builds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    parser.add_argument("--model", help="a model longmd opens (default: the small EGNN preset, untrained)")
    parser.add_argument("--data", type=Path, default=DATA, help="LAMMPS data file (atom_style atomic, metal)")
    parser.add_argument("--boundary", default="p p f", help="LAMMPS boundary of the data (the example: p p f)")
    parser.add_argument("--repeat", type=int, default=1, help="tile the data K x K in x and y (larger systems)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    atoms = read(args.data, format="lammps-data", units="metal", atom_style="atomic")
    atoms.pbc = [c == "p" for c in args.boundary.split()]
    data = args.data
    if args.repeat > 1:
        atoms = atoms.repeat((args.repeat, args.repeat, 1))
        data = write_lammps_data(atoms, Path(tempfile.mkdtemp(prefix="lammps-speed-")) / "tiled.data",
                                 [chemical_symbols[z] for z in sorted(set(atoms.numbers.tolist()))])
        atoms = read(data, format="lammps-data", units="metal", atom_style="atomic")
        atoms.pbc = [c == "p" for c in args.boundary.split()]
    if args.model:
        model, name = open_model(args.model), args.model
    else:
        model, name = egnn_potential(sorted(set(atoms.numbers.tolist())), preset="small"), "egnn small (untrained)"
        model.set_scale(0.3)
    model = model.to(dtype).eval()
    _lammps(model, data, 10, dtype, args.boundary)  # warm-up: first calls, allocator, LAMMPS start-up
    _longmd(model, atoms, 10, dtype)
    runs = {"lammps": [], "longmd": []}
    for _ in range(args.repeats):
        runs["lammps"].append(_lammps(model, data, args.steps, dtype, args.boundary))
        runs["longmd"].append(_longmd(model, atoms, args.steps, dtype))
    best = {engine: max(rs, key=lambda r: r["ns_per_day"]) for engine, rs in runs.items()}
    ratio = best["lammps"]["ns_per_day"] / best["longmd"]["ns_per_day"]
    for engine, r in best.items():
        print(f"{engine:7s} {r['ns_per_day']:.3f} ns/day ({args.steps} steps in {r['wall_s']:.2f} s)")
    print(f"LAMMPS / longmd: {ratio:.2f}; {100 * best['lammps']['force_share']:.0f}% of LAMMPS's time in longmd's "
          "callback")
    write_json({"model": name, "atoms": len(atoms), "data": str(args.data), "repeat": args.repeat, "steps": args.steps,
                "timestep_fs": 0.5, "dtype": args.dtype, "threads": args.threads, "runs": runs, "best": best,
                "lammps_over_longmd": ratio}, args.out, "lammps_speed.json")


if __name__ == "__main__":
    main()
