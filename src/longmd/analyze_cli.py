"""``longmd analyze``: analyses of a trained model on data; today ``pair-forces`` (the inductive-bias paper's
Fig. 2a/3a: the pairwise forces F_ij of F_i = sum_j F_ij, binned by species pair and distance)."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

CHECK_TOLERANCE = 1e-6  # eV/Å: sum_j F_ij must give the model's forces


def add_analyze(sub) -> None:
    p = sub.add_parser("analyze", help="analyses of a model on data (pair-forces)")
    what = p.add_subparsers(dest="analysis", required=True)
    q = what.add_parser("pair-forces", help="pairwise forces F_ij by species pair and distance: plot and CSV",
                        description="F_i = sum_j F_ij with F_ij from the energy's gradient w.r.t. each edge vector "
                        "(along the bond, -dE/dd, for distance-based potentials); writes OUT/pair_forces.png, "
                        "OUT/pair_forces.csv and OUT/pair_forces.json.")
    q.add_argument("model", help="longmd model file (.pt) or example:NAME")
    q.add_argument("data", nargs="+", help="trajectory files (any ase.io format; frames of other compositions need "
                   "their own info['traj_id']) or example:NAME")
    q.add_argument("--out", default="runs/pair_forces", help="output folder")
    q.add_argument("--frames", type=int, default=100, help="frames used, spread evenly over the data (0 = all)")
    q.add_argument("--bin-width", type=float, default=0.05, help="distance bin, Å")
    q.add_argument("--r-max", type=float, default=None, help="largest distance, Å (default: the model's cutoff)")
    q.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    q.set_defaults(func=cmd_pair_forces)


def cmd_pair_forces(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from ase import Atoms
    from tqdm import tqdm

    from longmd.analysis.pair_forces import bin_pair_forces, pair_forces, plot_pair_forces
    from longmd.calculator import atoms_to_graph
    from longmd.examples import resolve
    from longmd.io.read import read_trajectories
    from longmd.models.io import open_model

    model = open_model(args.model, device=args.device)
    cutoff = getattr(model, "cutoff", None)
    if not cutoff:
        raise ValueError(f"{args.model}: pair forces need a longmd potential with a cutoff")
    paths = [resolve(p) for p in args.data]
    # Single frames: the timestep is never used (a stand-in for files without one).
    frames = [(tr, f) for tr in read_trajectories(paths, timestep_fs=1.0) for f in range(len(tr))]
    if args.frames and len(frames) > args.frames:
        frames = [frames[k] for k in np.linspace(0, len(frames) - 1, args.frames).round().astype(int)]
    dtype = next((t.dtype for t in model.parameters() if t.is_floating_point()), torch.float64)
    parts, worst = [], 0.0
    for tr, f in tqdm(frames, desc="pair forces", leave=False):
        atoms = Atoms(numbers=tr.numbers, positions=tr.positions[f], cell=tr.cell[f], pbc=tr.pbc)
        graph, _ = atoms_to_graph(atoms, float(cutoff), torch.device(args.device), dtype)
        part = pair_forces(model, graph)
        worst = max(worst, float(np.abs(part.summed(len(atoms)) - part.forces).max()))
        parts.append(part)
    scale = max(float(np.abs(p.forces).max()) for p in parts)
    if worst > max(CHECK_TOLERANCE, 1e-5 * scale):
        raise ValueError(f"{args.model}: sum_j F_ij misses the model's forces by {worst:.2e} eV/Å: the model does "
                         "not depend on positions through its graph's edge vectors only")
    rows = bin_pair_forces(parts, args.r_max or float(cutoff), args.bin_width)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "pair_forces.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["pair"])
        writer.writeheader()
        writer.writerows(rows)
    plot_pair_forces(rows, out / "pair_forces.png", title=f"pair forces of {Path(args.model).name}")
    across = float(np.mean(np.concatenate([p.across for p in parts]))) if parts else 0.0
    summary = {"model": args.model, "data": args.data, "frames": len(frames), "cutoff_A": float(cutoff),
               "max_error_of_sum_eV_per_A": worst, "mean_across_bond_eV_per_A": across,
               "pairs": sorted({row["pair"] for row in rows})}
    (out / "pair_forces.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{len(frames)} frames; sum_j F_ij reproduces the forces to {worst:.1e} eV/Å; mean force across bonds "
          f"{across:.3g} eV/Å (0 for distance-based potentials)\nresults in {out}/ (pair_forces.png, .csv, .json)")
    return 0
