"""``longmd datagen NAME OUT``: the reference-data recipes (CHGNet standing in for DFT), and ``stride-data``
(trajectories of any companion potential stored every step, for stride predictors); all resumable in OUT."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

RECIPES = {
    "h2-pd6-graphene": "H2 impinging on Pd6 in a graphene vacancy (the embedded example; 57 atoms, 0.5 fs)",
    "sic": "zinc-blende SiC, 64 atoms, 1500-3500 K, 1 fs (the inductive-bias paper's simple solid)",
    "gese2": "liquid GeSe2, 72 atoms, melted and quenched to 1100-1800 K, 2 fs (its complex one)",
    "li-conductors": "Li-ion conductors of the GraNNField study (--material lgps: Li10GeP2S12, 50 atoms; "
                     "li3ps4, li4ges4 with --cell FILE), NVT at 800-1200 K, 2 fs, two runs per temperature",
    "stride-data": "NVE trajectories of --model (any potential) from --structure, every step stored, for stride "
                   "predictors (docs/long_stride.md)",
}


def add_datagen(sub) -> None:
    lines = "; ".join(f"{name}: {text}" for name, text in RECIPES.items())
    p = sub.add_parser("datagen", help="generate reference data (needs `pip install longmd[datagen]`)",
                       description=f"Recipes: {lines}. Rerun the same command to resume an interrupted run.")
    p.add_argument("name", choices=list(RECIPES))
    p.add_argument("out", help="output folder (resumes if it holds an interrupted run)")
    p.add_argument("--trajectories", type=int, help="trajectories (default: the recipe's, 16 | 8 | 8; "
                   "li-conductors: runs per temperature, 2)")
    p.add_argument("--frames", type=int, help="stored frames per trajectory (default: the recipe's, "
                   "600 | 300 | 300 | li-conductors 2500)")
    p.add_argument("--workers", type=int, default=None,
                   help="single-threaded worker processes (default: the recipe's, 2 | 1 | 1)")
    p.add_argument("--seed", type=int, default=2026, help="seed of the recipe")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--temperatures", help="temperature range MIN,MAX in K, spread linearly over the trajectories "
                   "(default: the recipe's: h2-pd6-graphene fixed, sic 1500,3500, gese2 1100,1800, stride-data "
                   "300,600); li-conductors: the list T1,T2,... (default 800,1000,1200), --trajectories runs each")
    c = p.add_argument_group("li-conductors")
    c.add_argument("--material", default="lgps", help="conductor (default: %(default)s; see "
                   "longmd.datagen.conductors.MATERIALS)")
    c.add_argument("--cell", help="structure file (CIF, POSCAR, ...) of the material: an ordered, fully occupied "
                   "cell of the published structure; required for li3ps4 and li4ges4, none ships with longmd "
                   "(default: for lgps, the shipped mp-696138 cell)")
    c.add_argument("--equilibrate-steps", type=int, help="discarded Langevin steps before each stored NVT run "
                   "(default: the recipe's, 500)")
    s = p.add_argument_group("stride-data")
    s.add_argument("--model", help="companion potential: longmd model file, mace:PATH or ase:module:Class "
                   "(e.g. ase:ase.calculators.emt:EMT; default: none, required by stride-data)")
    s.add_argument("--structure", default="al110", help="start structure: a file (last frame) or al110 (the "
                   "Al(110) slab of FlashMD's case study) (default: al110)")
    s.add_argument("--timestep-fs", type=float, default=1.0, help="NVE timestep, fs (default: %(default)s)")
    s.add_argument("--thermalise-fs", type=float, default=500.0, help="Langevin run before each trajectory, fs "
                   "(default: %(default)s)")
    s.add_argument("--device", default="cpu", help="torch device of the companion (default: %(default)s)")
    p.set_defaults(func=cmd_datagen)


def temperature_range(text: str) -> tuple[float, float]:
    """``"MIN,MAX"`` (or one value) in K -> (MIN, MAX), both > 0 (a ``ValueError`` naming the flag otherwise)."""
    low, _, high = text.partition(",")
    try:
        pair = (float(low), float(high or low))
    except ValueError:
        raise ValueError(f"datagen --temperatures: expected MIN,MAX in K, got {text!r}") from None
    if min(pair) <= 0 or pair[0] > pair[1]:
        raise ValueError(f"datagen --temperatures: need 0 < MIN <= MAX, got {text!r}")
    return pair


def temperature_list(text: str) -> tuple[float, ...]:
    """``"T1,T2,..."`` in K -> a tuple of distinct values > 0 (a ``ValueError`` naming the flag otherwise)."""
    try:
        values = tuple(float(t) for t in text.split(","))
    except ValueError:
        raise ValueError(f"datagen --temperatures: expected T1,T2,... in K, got {text!r}") from None
    if min(values) <= 0 or len(set(values)) != len(values):
        raise ValueError(f"datagen --temperatures: need distinct temperatures > 0 K, got {text!r}")
    return values


def cmd_conductors(args: argparse.Namespace) -> int:
    from longmd.datagen.conductors import generate, protocol_for

    changes = {key: value for key, value in (("runs_per_temperature", args.trajectories), ("n_frames", args.frames),
                                             ("workers", args.workers), ("seed", args.seed),
                                             ("equilibrate_steps", args.equilibrate_steps),
                                             ("cell_file", args.cell)) if value is not None}
    if args.temperatures:
        changes["temperatures_K"] = temperature_list(args.temperatures)
    protocol = protocol_for(args.material, **changes)
    path = generate(Path(args.out), protocol, progress=not args.no_progress)
    print(f"dataset: {path}\nmetadata: {path.parent / (args.material + '.json')}")
    return 0


def cmd_stride_data(args: argparse.Namespace) -> int:
    from longmd.datagen.stride_data import StrideDataProtocol, assemble, generate, open_structure
    from longmd.models.io import open_model

    if not args.model:
        raise ValueError("datagen stride-data needs --model (the companion potential)")
    protocol = StrideDataProtocol(n_trajectories=args.trajectories or 8, steps=(args.frames or 2001) - 1,
                                  timestep_fs=args.timestep_fs,
                                  temperatures_K=temperature_range(args.temperatures or "300,600"),
                                  thermalise_fs=args.thermalise_fs, seed=args.seed)
    if protocol.steps < 1 or protocol.n_trajectories < 1 or protocol.timestep_fs <= 0:
        raise ValueError("datagen stride-data: --frames >= 2, --trajectories >= 1 and --timestep-fs > 0")
    generate(open_model(args.model, device=args.device), open_structure(args.structure), protocol, args.out,
             progress=not args.no_progress)
    path, meta = assemble(args.out, protocol, args.model, args.structure)
    print(f"dataset: {path}\nmetadata: {meta}")
    return 0


def cmd_datagen(args: argparse.Namespace) -> int:
    if args.name == "stride-data":
        return cmd_stride_data(args)
    if importlib.util.find_spec("chgnet") is None:
        print("longmd datagen: error: the reference needs CHGNet: pip install 'longmd[datagen]'", file=sys.stderr)
        return 2
    if args.name == "li-conductors":
        return cmd_conductors(args)
    if args.material != "lgps" or args.equilibrate_steps is not None or args.cell is not None:
        raise ValueError(f"datagen {args.name}: --material, --cell and --equilibrate-steps are options of "
                         "li-conductors")
    changes = {key: value for key, value in (("n_trajectories", args.trajectories), ("n_frames", args.frames),
                                             ("workers", args.workers), ("seed", args.seed)) if value is not None}
    if args.name == "h2-pd6-graphene":
        if args.temperatures:
            raise ValueError("datagen h2-pd6-graphene: --temperatures does not apply (one temperature, the "
                             "recipe's); it is for sic, gese2 and stride-data")
        from longmd.datagen.h2_pd6_graphene import Protocol, generate

        path = generate(Path(args.out), Protocol(**changes), progress=not args.no_progress)
    else:
        from longmd.datagen.bulk import generate, protocol_for

        if args.temperatures:
            changes["temperatures_K"] = temperature_range(args.temperatures)
        path = generate(Path(args.out), protocol_for(args.name, **changes), progress=not args.no_progress)
    print(f"dataset: {path}\nmetadata: {path.parent / (path.name.split('.')[0] + '.json')}")
    return 0
