"""``evaluate``: run the selected parts for every model under one protocol, write metrics, plots and report."""

from __future__ import annotations

import hashlib
import json
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from pathlib import Path

import torch
from torch import nn

from longmd.data.splits import Split
from longmd.data.trajectory import Trajectory
from longmd.evaluation import report
from longmd.evaluation.context import Context, model_dtype
from longmd.evaluation.heldout import HeldOut
from longmd.evaluation.options import DEFAULT_PARTS, PARTS, EvalOptions
from longmd.evaluation.parts import frames, jaccard, rollout, speed, stability, stride, transport
from longmd.evaluation.stride_report import stride_plots
from longmd.models.ase_adapter import ASECalculatorModel
from longmd.models.io import open_model
from longmd.models.stride import StridePredictor
from longmd.runtime import set_threads

ModelPart = Callable[[Context, str, nn.Module, dict], dict]
MODEL_PARTS: dict[str, ModelPart] = {  # in running order (drift reuses the stability runs)
    "rollout": rollout.run,
    "frames": frames.run,
    "stability": stability.run,
    "drift": speed.drift,
    "speed": speed.speed,
    "transport": transport.run,
}


def parse_parts(parts: str | Sequence[str] | None) -> list[str]:
    """``"rollout,frames"`` / a list / None (the defaults) / ``"all"`` -> validated names in canonical order."""
    if parts is None:
        return list(DEFAULT_PARTS)
    names = [p.strip() for p in (parts.split(",") if isinstance(parts, str) else parts) if p.strip()]
    if names == ["all"]:
        return list(PARTS)
    unknown = [p for p in names if p not in PARTS]
    if unknown or not names:
        raise ValueError(f"unknown evaluation parts {unknown or names} (choose from {', '.join(PARTS)} or all)")
    return [p for p in PARTS if p in names]


def versions(specs: Mapping[str, str | None]) -> dict[str, str]:
    """Versions of Python, longmd, torch, ASE, numpy and of the packages behind ASE calculator specs."""
    names = ["longmd", "torch", "ase", "numpy", "vesin_torch"]
    for spec in specs.values():
        if spec and spec.startswith("ase:"):
            names.append(spec[4:].split(":")[0].split(".")[0])
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in dict.fromkeys(names):
        try:
            out[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            out[name] = "unknown"
    out["torch_threads"] = str(torch.get_num_threads())
    return out


def fingerprint(model: nn.Module) -> str:
    """SHA-1 of a model's class, parameters and buffers (resume only reuses results of the very same model)."""
    digest = hashlib.sha1(f"{type(model).__name__}({model.extra_repr()})".encode())
    for key, tensor in model.state_dict().items():
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _model_info(model: nn.Module, spec: str | None) -> dict:
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    dtype = model_dtype(model)
    return {"spec": spec, "class": type(model).__name__, "n_parameters": n_params, "cutoff_A": model.cutoff,
            "dtype_saved": None if dtype is None else str(dtype).removeprefix("torch."),
            "fingerprint": fingerprint(model)}


def _previous(out: Path, protocol: dict) -> dict | None:
    """metrics.json of an earlier run with exactly this protocol, or None."""
    path = out / "metrics.json"
    if not path.is_file():
        return None
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return old if old.get("protocol") == report.clean(protocol) else None


def evaluate(
    models: Mapping[str, nn.Module],
    trajectories: Sequence[Trajectory],
    out_dir: str | Path,
    test: Split | Sequence[int] | None = None,
    parts: str | Sequence[str] | None = None,
    options: EvalOptions | None = None,
    specs: Mapping[str, str] | None = None,
    resume: bool = False,
) -> dict:
    """Evaluate every model on the held-out data under the same protocol; returns the metrics dict.

    Args:
        models: ``{name: EnergyModel}`` (longmd models or :class:`ASECalculatorModel`).
        trajectories: the reference data. test: a Split (its test subset), trajectory indices, or None (all).
        out_dir: receives ``metrics.json``, ``report.md``, PNG plots and ``runs/`` (MD trajectories, thermo logs).
        parts: which parts (default: all but transport). options: the protocol (:class:`EvalOptions`).
        specs: ``{name: spec or path}`` recorded in the report.
        resume: reuse the results of parts already in ``out_dir/metrics.json`` when the protocol is identical
            (a killed evaluation goes on where it stopped).
    """
    if not models:
        raise ValueError("evaluate: no models")
    opts = options or EvalOptions()
    threads = torch.get_num_threads()
    if torch.device(opts.device).type == "cpu":
        set_threads(opts.threads, max(tr.n_atoms for tr in trajectories))
    try:
        return _evaluate(models, trajectories, Path(out_dir), test, parse_parts(parts), opts, dict(specs or {}), resume)
    finally:
        torch.set_num_threads(threads)


def _evaluate(models: Mapping[str, nn.Module], trajectories: Sequence[Trajectory], out: Path,
              test: Split | Sequence[int] | None, part_list: list[str], opts: EvalOptions, specs: dict[str, str],
              resume: bool) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(HeldOut.select(trajectories, test), opts, out)
    protocol = ctx.protocol(part_list)
    previous = _previous(out, protocol) if resume else None
    metrics: dict = {"protocol": protocol, "versions": versions(specs), "reference": {}, "models": {},
                     "wall_s": {}}
    old_models = (previous or {}).get("models", {})
    for name, model in models.items():
        info = _model_info(model, specs.get(name) or getattr(model, "spec", None))
        old = old_models.get(name, {})
        same_model = (old.get("spec"), old.get("fingerprint")) == (info["spec"], info["fingerprint"])
        same = {k: v for k, v in old.items() if k in (*PARTS, "stride")} if same_model else {}
        metrics["models"][name] = {**info, **same}
    ctx.reference = metrics["reference"]
    old_ref = (previous or {}).get("reference", {})
    start = time.perf_counter()
    if "jaccard" in part_list:
        cutoffs = [m.cutoff for m in models.values() if not isinstance(m, ASECalculatorModel)]
        cutoff = opts.jaccard_cutoff or (max(cutoffs) if cutoffs else 5.0)
        metrics["reference"]["jaccard"] = old_ref.get("jaccard") or jaccard.reference(ctx, cutoff)
    if "stability" in part_list:
        metrics["reference"]["stability"] = old_ref.get("stability") or stability.reference(ctx)
    if "transport" in part_list:
        metrics["reference"]["transport"] = old_ref.get("transport") or transport.reference(ctx)
    metrics["wall_s"]["reference"] = time.perf_counter() - start
    report.write_metrics(metrics, out)
    companion = None
    for name, model in models.items():
        entry = metrics["models"][name]
        if isinstance(model, StridePredictor):  # its own parts: no forces to score
            if "stride" not in entry:
                if companion is None and opts.companion:
                    companion = ctx.prepare(open_model(opts.companion, device=opts.device))
                start = time.perf_counter()
                entry["stride"] = stride.run(ctx, name, ctx.prepare(model), entry, companion)
                entry["stride"]["plots"] = stride_plots(name, ctx.slug(name), entry["stride"], out)
                entry["stride"]["wall_s"] = time.perf_counter() - start
                report.write_metrics(metrics, out)
            continue
        prepared = None
        for part, fn in MODEL_PARTS.items():
            if part not in part_list or part in entry:
                continue
            if prepared is None:
                prepared = ctx.prepare(model)
            start = time.perf_counter()
            entry[part] = fn(ctx, name, prepared, entry)
            entry[part]["wall_s"] = time.perf_counter() - start
            report.write_metrics(metrics, out)
    plots = report.make_plots(metrics, out)
    plots += [p for e in metrics["models"].values() for part in (*PARTS, "stride")
              for p in (e.get(part) or {}).get("plots", [])]
    metrics["plots"] = plots
    report.write_metrics(metrics, out)
    report.write_report(metrics, out, plots)
    return report.clean(metrics)

