"""``longmd evaluate`` (the parser lives in ``longmd.cli``) and the demo's entry point ``evaluate_run``."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from longmd.data.splits import Split
from longmd.evaluation.core import evaluate
from longmd.evaluation.heldout import trained_on
from longmd.evaluation.options import EvalOptions, TrackedPair, paper_scale
from longmd.evaluation.report import add_training_section
from longmd.examples import resolve
from longmd.io.read import read_trajectories
from longmd.models.ase_adapter import PREFIX as ASE_PREFIX
from longmd.models.io import load_model, open_model
from longmd.models.mace import PREFIX as MACE_PREFIX


def load_models(specs: Sequence[str], names: Sequence[str] | None = None, device: str = "cpu",
                ase_cutoff: float = 5.0) -> dict[str, nn.Module]:
    """``{name: model}`` from longmd model files, ``mace:PATH`` and ``ase:module:Name?key=value`` specs.

    Names default to the file stem (with its folder when stems repeat) or the calculator's name.
    """
    if names and len(names) != len(specs):
        raise ValueError(f"{len(names)} --name for {len(specs)} --model: give one name per model or none")
    models: dict[str, nn.Module] = {}
    for k, spec in enumerate(specs):
        model = open_model(spec, device=device, ase_cutoff=ase_cutoff)
        if spec.startswith(ASE_PREFIX):
            default = spec[len(ASE_PREFIX):].split("?")[0].split(":")[-1]
        else:
            default = Path(spec.removeprefix(MACE_PREFIX)).stem
            if any(Path(s).stem == default for j, s in enumerate(specs) if j != k):
                default = f"{Path(spec.removeprefix(MACE_PREFIX)).parent.name}/{default}"
        name = names[k] if names else default
        if name in models:
            raise ValueError(f"two models are named {name!r}: use --name to label them")
        models[name] = model
    return models


def _parse_track(text: str) -> TrackedPair:
    parts = [p.strip() for p in text.split(",")]
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        return TrackedPair(int(parts[0]), int(parts[1]), float(parts[2]) if len(parts) == 3 else None)
    except ValueError:
        raise ValueError(f"--track {text!r}: expected I,J or I,J,THRESHOLD_A (0-based atom indices)") from None


def options_from_args(args: Any, timestep_fs: float | None = None) -> EvalOptions:
    """EvalOptions from the parsed command line: paper scale first, then flags, then --option KEY=VALUE."""
    base: dict[str, Any] = {}
    if getattr(args, "paper_scale", False):
        base.update(paper_scale(timestep_fs or 0.5))
    flags = {
        "rollout_steps": "steps", "rollout_starts": "starts", "long_steps": "long_steps", "long_runs": "long_runs",
        "ensemble": "ensemble", "temperature_K": "temperature_K", "record_every": "record_every",
        "frames_max": "frames", "dtype": "dtype", "device": "device", "seed": "seed", "batch_size": "batch_size",
        "transport_species": "msd_species", "transport_steps": "transport_steps", "speed_steps": "speed_steps",
        "speed_replicas": "speed_replicas", "drift_steps": "drift_steps", "threads": "threads",
        "companion": "energy_model",
    }
    for key, attr in flags.items():
        value = getattr(args, attr, None)
        if value is not None:
            base[key] = value
    if getattr(args, "temperatures", None):
        base["temperatures"] = [float(t) for t in str(args.temperatures).split(",") if t.strip()]
    if getattr(args, "track", None):
        base["track"] = [_parse_track(t) for t in args.track]
    if getattr(args, "no_progress", False):
        base["progress"] = False
    known = {f.name for f in dataclasses.fields(EvalOptions)}
    for text in getattr(args, "option", None) or []:
        key, sep, value = text.partition("=")
        if not sep or key.strip() not in known:
            raise ValueError(f"--option {text!r}: expected KEY=VALUE with KEY one of {', '.join(sorted(known))}")
        base[key.strip()] = yaml.safe_load(value)
    return EvalOptions().replace(**base)


def evaluate_cli(args: Any) -> int:
    """Entry point of ``longmd evaluate``."""
    keys = {k: getattr(args, k) for k in ("energy_key", "forces_key", "traj_id_key") if getattr(args, k, None)}
    trajectories = read_trajectories([resolve(p) for p in args.data], timestep_fs=getattr(args, "timestep_fs", None),
                                     **keys)
    test = Split.load(args.split) if args.split else None
    if test is None:
        _warn_trained_on(args.model, trajectories)
    options = options_from_args(args, trajectories[0].timestep_fs)
    models = load_models(args.model, args.name, options.device, getattr(args, "ase_cutoff", None) or 5.0)
    specs = {name: spec for name, spec in zip(models, args.model)}
    metrics = evaluate(models, trajectories, args.out, test=test, parts=args.parts, options=options, specs=specs,
                       resume=getattr(args, "resume", False))
    print(summary(metrics))
    print(f"\nresults in {args.out}/ (report.md, metrics.json, {len(metrics['plots'])} plots)")
    return 0


def _warn_trained_on(specs: list[str], trajectories) -> None:
    """Without --split every trajectory is scored as held out: say which ones a model was trained on."""
    for spec in specs:
        found = trained_on(spec, trajectories)
        if found and found[1]:
            path, names = found
            shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
            print(f"warning: no --split given, so all {len(trajectories)} trajectories are scored as held-out data, "
                  f"but {spec} was trained or validated on {len(names)} of them ({shown}; {path}); pass "
                  f"--split {path} to score its test trajectories only", file=sys.stderr)


def summary(metrics: Mapping) -> str:
    """A few headline numbers per model, for the terminal."""
    lines = []
    for name, m in metrics["models"].items():
        items = []
        if "rollout" in m:
            items.append(f"rollout MEPA {_g(m['rollout']['mepa_mean'])} eV/Å")
        if "frames" in m:
            items.append(f"F MAE {_g(m['frames']['force_mae'])} eV/Å")
        if "stability" in m:
            s = m["stability"]
            floor = (s.get("noise_floor") or {}).get("hr_mae")
            within = "within" if (s.get("within_noise") or {}).get("hr_mae") else "not within"
            verdict = "" if floor is None else f" ({within} the noise floor {_g(floor)})"
            items.append(f"stable {s['stable_runs']}/{s['n_runs']}, h(r)-MAE {_g(s['hr_mae'])}{verdict}")
        if "drift" in m:
            items.append(f"drift {_g(m['drift'].get('drift_meV_per_atom_per_ps'))} meV/atom/ps")
        if "speed" in m:
            items.append(f"{_g(m['speed']['steps_per_s'])} steps/s")
        if "stride" in m:
            items.extend(stride_summary(m["stride"]))
        lines.append(f"{name}: " + "; ".join(items))
    return "\n".join(lines)


def stride_summary(r: Mapping) -> list[str]:
    """Headline numbers of a stride predictor."""
    err = r["errors"]["predictor"]
    items = [f"stride {r['stride_fs']:g} fs: |dq| {_g(err['position_deviation_A'][-1])} Å after "
             f"{r['errors']['strides']} strides"]
    vv = r["errors"].get("velocity_verlet")
    if vv:
        items.append(f"velocity Verlet at the stride: {vv['failed']} of {r['errors']['starts']} blew up")
    for label, e in (r.get("energy") or {}).items():
        items.append(f"{label}: drift {_g(e['drift_meV_per_atom_per_ps'])} meV/atom/ps"
                     + (f", stopped at stride {e['stopped']['stride']} ({e['stopped']['reason']})" if e["stopped"]
                        else ""))
    for ensemble, t in r["temperature"].items():
        items.append(f"{ensemble}: species T within {_g(t['largest_deviation_percent'])}% of target")
    if r.get("speed"):
        items.append(f"{_g(r['speed']['speedup'])}x faster per ps than velocity Verlet")
    return items


def _g(x: Any) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def evaluate_run(models: Mapping[str, str | Path], cfg: Any, split_path: str | Path, out_dir: str | Path,
                 parts: str | Sequence[str] | None = None, options: EvalOptions | None = None,
                 run_dir: str | Path | None = None) -> Path:
    """Evaluate saved models of a training run on its test trajectories (the demo); returns report.md's path.

    ``cfg`` is the run's training config (its ``data`` section says how to read the data). With the run's
    directory ``run_dir`` the report also gets its validation MEPA of the best model of each S.
    """
    from longmd.training.setup import load_data

    trajectories = load_data(cfg)
    device = cfg.training.device if cfg.training.device not in (None, "auto") else "cpu"
    options = options or EvalOptions(device=device, threads=cfg.training.threads)
    loaded = {name: load_model(path, device=options.device) for name, path in models.items()}
    evaluate(loaded, trajectories, out_dir, test=Split.load(split_path), parts=parts, options=options,
             specs={n: str(p) for n, p in models.items()})
    report = Path(out_dir) / "report.md"
    return report if run_dir is None else add_training_section(report, Path(run_dir))
