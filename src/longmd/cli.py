"""The ``longmd`` command line: ``train``, ``simulate``, ``evaluate``, ``datagen``, ``analyze``, ``lammps``, ``demo``,
``info``, ``config``.

Heavy imports happen inside each command so ``longmd --help`` answers at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_TIMESTEP_FS = 0.5  # simulate's timestep when neither --timestep-fs nor the structure gives one


class _DefaultsFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to every option whose help does not already say its default (like
    ``argparse.ArgumentDefaultsHelpFormatter``, without "(default: None)" for options whose default is
    described in words)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default == []
        if "default" in text or unset or action.default == argparse.SUPPRESS or action.required:
            return text
        if not action.option_strings and action.nargs not in ("?", "*"):
            return text
        return f"{text} (default: %(default)s)".strip()


def _device(text: str) -> str:
    """argparse type of --device: cpu, cuda or cuda:N."""
    kind, _, index = text.partition(":")
    if (kind == "cpu" and not index) or (kind == "cuda" and (not index or index.isdigit())):
        return text
    raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")


def _bounded(kind: type, low: float, strict: bool):
    """argparse type: a number of ``kind`` above ``low`` (``strict``) or at least ``low``, checked up front."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (value > low if strict else value >= low) or value != value:
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {low}, got {text}")
        return value
    parse.__name__ = kind.__name__  # argparse's error names the type
    return parse


POSITIVE, NON_NEGATIVE = _bounded(float, 0, True), _bounded(float, 0, False)
COUNT, STEPS = _bounded(int, 1, False), _bounded(int, 0, False)


def _require_device(device: str | None) -> None:
    """A clear error when --device names a CUDA device that is not there."""
    from longmd.runtime import check_device

    check_device(device)


THREADS_HELP = "torch CPU threads (default: auto, the idle CPUs with at most one per 500 atoms; logged)"
OVERWRITE_HELP = "replace an earlier run in --out: delete the files this command writes there (nothing else)"


def add_key_options(p: argparse.ArgumentParser, defaults: bool = True) -> None:
    """--energy-key, --forces-key, --traj-id-key (``defaults=False``: unset options stay None)."""
    mace = "; MACE's REF_energy/REF_forces are read when the default key is absent"
    p.add_argument("--energy-key", default="energy" if defaults else None,
                   help=f"info/calculator key of the total energy (default: energy{mace})")
    p.add_argument("--forces-key", default="forces" if defaults else None,
                   help=f"array/calculator key of the forces (default: forces{mace})")
    p.add_argument("--traj-id-key", default="traj_id" if defaults else None,
                   help="info key splitting one file into trajectories (default: traj_id)")


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a potential (conventional or Dynamic Training) from a YAML config")
    p.add_argument("config", nargs="?",
                   help="YAML config or a packaged one: demo | paper | stride (omit for all defaults; see "
                   "`longmd config`)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config key, e.g. --set training.s_max=6 (repeatable)")
    p.add_argument("--out", help="run directory (overrides the config's `out`)")
    p.add_argument("--device", help="cpu | cuda | auto (overrides training.device)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--extend", action="store_true",
                   help="with --resume: a finished run trains on at its last S (lr reset to training.lr_reset; "
                   "bound it with --set training.max_epochs=N or training.max_minutes, both counted over the whole "
                   "run)")
    p.add_argument("--threads", type=int, help=THREADS_HELP + " (overrides training.threads)")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from longmd.config import load_config
    from longmd.rundir import prepare_out
    from longmd.training.distributed import is_main
    from longmd.training.trainer import train

    overrides = list(args.overrides)
    if args.out:
        overrides.append(f"out={args.out}")
    if args.device:
        overrides.append(f"training.device={args.device}")
    if args.threads is not None:
        overrides.append(f"training.threads={args.threads}")
    cfg = load_config(args.config, overrides)
    if is_main():
        prepare_out(cfg.out, "train", args.resume, args.overwrite)
    if args.extend and not args.resume:
        raise SystemExit("longmd train: --extend needs --resume (it continues a finished run)")
    result = train(cfg, resume=args.resume, extend=args.extend)
    if is_main():  # under torchrun: rank 0 only
        print(f"\nresults in {result.out}/ (best model: {result.best_model})")
    return 0


def _add_simulate(sub) -> None:
    p = sub.add_parser("simulate", help="run MD with a trained model (docs/dynamics.md)",
                       description="Batched MD of R replicas of a structure; writes OUT/thermo.csv, "
                       "traj_XXX.extxyz/.traj, thermo.png and summary.json (docs/dynamics.md).")
    p.add_argument("model", nargs="?", help="longmd model file (.pt), mace:PATH or ase:module:Class?key=value; or "
                   "a stride predictor file (as --predictor) (default: none, then --predictor is needed)")
    p.add_argument("init", help="initial structure: any ase.io file or example:NAME; the last frame unless "
                   "ASE's FILE@INDEX picks one (FILE@0: the first)")
    p.add_argument("--predictor", action="append", help="a stride predictor (longmd train stride) as the "
                   "propagator's core instead of a potential: one call per step of its stride, the centre-of-mass "
                   "filter always on; repeat it for a committee (mean step; the members' spread is logged)")
    p.add_argument("--max-spread-A", type=POSITIVE, default=None,
                   help="stop a replica whose committee spread (largest per-atom std of the members' positions) "
                   "passes this, Å (default: none, only logged)")
    p.add_argument("--energy-model", help="companion potential (any MODEL form) whose energy the energy filter "
                   "conserves by rescaling momenta after each learned stride (FlashMD); turns that filter on "
                   "(default: none)")
    p.add_argument("--steps", type=STEPS, default=1000, help="MD steps")
    p.add_argument("--timestep-fs", type=POSITIVE, default=None,
                   help="MD timestep, fs (default: a predictor's stride; else the structure's info['timestep_fs'] "
                   f"when it has one, else {DEFAULT_TIMESTEP_FS})")
    p.add_argument("--ensemble", choices=["nve", "langevin", "svr"], default="nve", help="ensemble")
    p.add_argument("--temperature-K", type=NON_NEGATIVE, default=None,
                   help="thermostat target and temperature of drawn velocities (default: none; needed by "
                   "langevin, svr and --init-velocities maxwell-boltzmann)")
    p.add_argument("--init-velocities", choices=["auto", "maxwell-boltzmann", "given"], default="auto",
                   help="auto: keep the structure's momenta (every replica starts identically) and draw "
                   "Maxwell-Boltzmann momenta at --temperature-K only for a structure without any; "
                   "maxwell-boltzmann: draw fresh, independent momenta for each replica (seeded by --seed, zero "
                   "total momentum); given: never draw (default: auto)")
    p.add_argument("--friction-per-fs", type=POSITIVE, default=0.01, help="Langevin friction, 1/fs")
    p.add_argument("--tau-fs", type=POSITIVE, default=100.0, help="SVR relaxation time, fs")
    p.add_argument("--replicas", type=COUNT, default=1, help="copies of the structure run together")
    p.add_argument("--log-every", type=COUNT, default=10, help="steps between thermo rows")
    p.add_argument("--traj-every", type=COUNT, default=10, help="steps between trajectory frames")
    p.add_argument("--seed", type=int, default=0, help="seed of initial velocities and thermostat noise")
    p.add_argument("--device", type=_device, default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--dtype", choices=["float32", "float64"], default=None, help="precision (default: the model's)")
    p.add_argument("--threads", type=int, help=THREADS_HELP)
    p.add_argument("--skin", type=NON_NEGATIVE, default=1.0, help="Verlet-list skin, Å")
    p.add_argument("--min-distance", type=NON_NEGATIVE, default=0.5, help="blow-up: atoms closer than this, Å")
    p.add_argument("--max-temperature-K", type=POSITIVE, default=None,
                   help="blow-up: temperature above this (default 10x --temperature-K, or 5000 K)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--out", default="runs/simulate", help="output folder")
    p.add_argument("--checkpoint-every", type=STEPS, default=1000,
                   help="steps between checkpoints in OUT (one is always written at the end; 0 = only that one)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint (a higher --steps extends a finished run)")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.set_defaults(func=cmd_simulate)


def simulation_timestep(atoms, given: float | None, source: str) -> float:
    """--timestep-fs if given, else the structure's ``info['timestep_fs']``, else the default; printed."""
    import math

    stored = atoms.info.get("timestep_fs")
    if given is not None:
        dt, why = given, "--timestep-fs"
        if stored is not None and not math.isclose(float(stored), given):
            why += f", overriding timestep_fs={stored} of {source}"
    elif stored is not None:
        dt, why = float(stored), f"timestep_fs of {source}; --timestep-fs overrides"
    else:
        dt, why = DEFAULT_TIMESTEP_FS, f"default; {source} carries no timestep_fs"
    if not (math.isfinite(dt) and dt > 0):
        raise ValueError(f"timestep must be a positive number of fs, got {dt} ({why})")
    print(f"timestep {dt:g} fs ({why})")
    return dt


def cmd_simulate(args) -> int:
    import torch

    from longmd.dynamics.simulate import simulate
    from longmd.examples import resolve
    from longmd.io.read import read_structure, split_index
    from longmd.models.committee import Committee
    from longmd.models.io import open_model
    from longmd.models.stride import StridePredictor
    from longmd.rundir import prepare_out
    from longmd.runtime import set_threads

    _require_device(args.device)
    if (args.model is None) == (args.predictor is None):
        raise ValueError("give a MODEL or --predictor PREDICTOR (one of the two)")
    prepare_out(args.out, "simulate", args.resume, args.overwrite)
    path, index = split_index(args.init)
    atoms = read_structure(resolve(path), -1 if index is None else index)
    models = [open_model(spec, device=args.device) for spec in ([args.model] if args.model else args.predictor)]
    for spec, m in zip(args.predictor or [], models, strict=False):
        if not isinstance(m, StridePredictor):
            raise ValueError(f"--predictor {spec}: not a stride predictor (give a potential as MODEL)")
    model = models[0] if len(models) == 1 else Committee(models)
    predictor = isinstance(model, StridePredictor)
    if args.max_spread_A is not None and not isinstance(model, Committee):
        raise ValueError("--max-spread-A needs a committee: give --predictor two or more times")
    energy_model = None if args.energy_model is None else open_model(args.energy_model, device=args.device)
    if energy_model is not None and not predictor:
        raise ValueError("--energy-model filters a stride predictor; a potential conserves its own energy")
    if predictor and args.timestep_fs is None:
        timestep_fs = float(model.timestep_fs)
        print(f"timestep {timestep_fs:g} fs (the predictor's stride)")
    else:
        timestep_fs = simulation_timestep(atoms, args.timestep_fs, args.init)
    if args.device == "cpu":
        set_threads(args.threads, len(atoms) * args.replicas)
    filters = (["com"] if predictor else []) + (["energy"] if energy_model is not None else [])
    result = simulate(
        model, atoms, steps=args.steps, timestep_fs=timestep_fs, ensemble=args.ensemble,
        init_velocities=args.init_velocities,
        temperature_K=args.temperature_K, friction_per_fs=args.friction_per_fs, tau_fs=args.tau_fs,
        replicas=args.replicas, out_dir=args.out, log_every=args.log_every, traj_every=args.traj_every,
        seed=args.seed, device=args.device, dtype=getattr(torch, args.dtype) if args.dtype else None,
        skin=args.skin, min_distance=args.min_distance, max_temperature_K=args.max_temperature_K,
        progress=not args.no_progress, checkpoint_every=args.checkpoint_every, resume=args.resume,
        filters=filters, energy_model=energy_model, max_spread_A=args.max_spread_A,
    )
    print(result.summary())
    print(f"results in {args.out}/")
    if args.steps and not any(result.steps_completed):
        print("longmd simulate: error: every replica stopped at step 0 (see above)", file=sys.stderr)
        return 1
    return 0


def _add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate", help="rollout test, errors, stability, structure, drift and speed of models (docs/evaluation.md)",
        description="Evaluate longmd models and ASE calculators under one protocol; writes OUT/metrics.json, "
        "OUT/report.md and PNG plots. Unset options take the defaults of longmd.evaluation.EvalOptions.",
    )
    p.add_argument("--data", action="append", required=True, help="reference trajectories (repeatable; example:NAME)")
    p.add_argument("--model", action="append", required=True,
                   help="longmd model file, 'mace:PATH' or ASE calculator 'ase:module:Class?key=value' (repeatable)")
    p.add_argument("--name", action="append", help="label of each --model, in order")
    p.add_argument("--split",
                   help="split.json of a training run: evaluate on its test trajectories (default: all data)")
    p.add_argument("--out", default="runs/evaluate", help="output folder")
    p.add_argument("--parts", default=None,
                   help="comma-separated: rollout,frames,stability,jaccard,transport,drift,speed or all "
                   "(default: all but transport)")
    p.add_argument("--steps", type=int, help="rollout-test length in steps (default 300, capped by the data)")
    p.add_argument("--starts", type=int, help="rollout starts (default: one per test trajectory)")
    p.add_argument("--long-steps", type=int, help="steps of each long stability run (default 1000)")
    p.add_argument("--long-runs", type=int, help="number of long stability runs (default 2)")
    p.add_argument("--ensemble", choices=["nve", "langevin", "svr"],
                   help="ensemble of the stability runs (default: nve)")
    p.add_argument("--temperature-K", type=float, help="thermostat target (default: the reference's mean)")
    p.add_argument("--record-every", type=int, help="steps between recorded frames of long runs (default 10)")
    p.add_argument("--track", action="append", metavar="I,J[,THRESHOLD_A]",
                   help="atom pair whose distance is followed; events = distance above the threshold (repeatable; "
                   "default: automatic, e.g. H-H and the most elongating Pd-Pd pair)")
    p.add_argument("--frames", type=int, help="held-out frames for single-frame errors (default 100, 0 = all)")
    p.add_argument("--temperatures", help="transport: comma-separated temperatures, K (default: the reference's)")
    p.add_argument("--msd-species", help="transport: diffusing species (symbol or Z; default: the lightest)")
    p.add_argument("--transport-steps", type=int, help="transport: steps per run (default 2000)")
    p.add_argument("--drift-steps", type=int, help="NVE drift run when the stability runs are not NVE (default 1000)")
    p.add_argument("--speed-steps", type=int, help="timed steps per model (default 50)")
    p.add_argument("--speed-replicas", type=int, help="replicas simulated together in the speed test (default 1)")
    p.add_argument("--batch-size", type=int, help="rollout starts run together (default 16)")
    p.add_argument("--dtype", choices=["float64", "float32", "model"], help="precision of all runs (default: float64)")
    p.add_argument("--timestep-fs", type=float,
                   help="timestep of the data if the files do not carry it (default: none, the files' own)")
    add_key_options(p, defaults=False)
    p.add_argument("--ase-cutoff", type=float, help="Verlet-list cutoff for ASE calculators, Å (default 5)")
    p.add_argument("--energy-model", help="stride predictors: companion potential (any --model form) for the energy "
                   "filter, the velocity-Verlet baseline and the speed comparison (default: none)")
    p.add_argument("--paper-scale", action="store_true",
                   help="the DT paper's protocol: 300-step rollouts, 5 x 100 ps stability runs (hours on a CPU)")
    p.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="any EvalOptions field, value parsed as YAML, e.g. --option r_max=8 (repeatable)")
    p.add_argument("--resume", action="store_true", help="reuse finished parts of OUT/metrics.json (same protocol)")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--device", type=_device, help="cpu | cuda | cuda:N (default cpu)")
    p.add_argument("--threads", type=int, help=THREADS_HELP)
    p.add_argument("--seed", type=int, help="seed of starts and thermostats (default 0)")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args) -> int:
    from longmd.evaluation import evaluate_cli
    from longmd.rundir import prepare_out

    _require_device(args.device)
    prepare_out(args.out, "evaluate", args.resume, args.overwrite)
    return evaluate_cli(args)


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="summarise a dataset")
    p.add_argument("data", nargs="+", help="trajectory files or example:NAME")
    p.add_argument("--timestep-fs", type=float,
                   help="timestep of the data if the files do not carry it (default: none, the files' own)")
    add_key_options(p)
    p.set_defaults(func=cmd_info)


def cmd_info(args) -> int:
    import numpy as np
    from ase import Atoms

    from longmd.examples import resolve
    from longmd.io.read import read_trajectories

    trajectories = read_trajectories([resolve(p) for p in args.data], timestep_fs=args.timestep_fs,
                                     energy_key=args.energy_key, forces_key=args.forces_key,
                                     traj_id_key=args.traj_id_key)
    print(f"{len(trajectories)} trajectories, {sum(len(t) for t in trajectories)} frames")
    for tr in trajectories:
        formula = Atoms(numbers=tr.numbers).get_chemical_formula()
        print(f"  {tr.name}: {len(tr)} frames x {tr.timestep_fs} fs, {tr.n_atoms} atoms ({formula}), "
              f"|F|max {np.abs(tr.forces).max():.2f} eV/Å")
    return 0


def _add_config(sub) -> None:
    p = sub.add_parser("config", help="print every training config key with its default and doc")
    p.set_defaults(func=cmd_config)


def cmd_config(args) -> int:
    from longmd.config import describe

    print(describe())
    return 0


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="train a small EGNN + 3-body term with DT on the example, then evaluate it")
    p.add_argument("--out", default="runs/demo", help="output folder (training run and evaluation)")
    p.add_argument("--config", default=None, help="training config (default: the packaged demo config)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted demo in --out")
    p.add_argument("--threads", type=int, help=THREADS_HELP + " (default of the demo config: 1)")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    from longmd.demo import run_demo

    return run_demo(Path(args.out), config=args.config, resume=args.resume, threads=args.threads)


def _subparser(**kwargs) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(formatter_class=_DefaultsFormatter, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="longmd", description=__doc__.splitlines()[0])
    from longmd import __version__

    parser.add_argument("--version", action="version", version=f"longmd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_subparser)
    from longmd.analyze_cli import add_analyze
    from longmd.datagen.cli import add_datagen
    from longmd.lammps_cli import add_lammps

    for add in (_add_train, _add_simulate, _add_evaluate, add_datagen, add_analyze, add_lammps, _add_demo, _add_info,
                _add_config):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError) as exc:  # DataError, ConfigError, a read-only --out: one clear line, no traceback
        print(f"longmd {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
