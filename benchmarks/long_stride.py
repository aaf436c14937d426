"""Long strides on the Al(110) slab (FlashMD's case study), with ASE's EMT as the exact companion.

Stages (each cached in OUT, so a rerun resumes):
1. ``train``: a stride predictor on stride data of the slab (``longmd datagen stride-data``), by ``longmd train``
   with a wall-time budget;
2. ``md``: Langevin at ``--temperature-K`` for ``--ps`` with the predictor (energy filter with EMT) and two
   independent velocity-Verlet runs with EMT at the data's timestep; per layer: temperature and MSD; the pair
   density n(r) of the second half against the first velocity-Verlet run, next to the noise between the two;
3. ``speed``: wall seconds per simulated ps of the predictor with its filters, velocity Verlet with EMT and
   velocity Verlet with an EGNN of the predictor's size (untrained: timing only).

    python benchmarks/long_stride.py --data data/al110/stride_data.extxyz.xz --out runs/long_stride \
        --stride-fs 64 --train-minutes 20 --ps 20

Writes OUT/long_stride.json and OUT/long_stride.png.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import environment  # noqa: E402
from longmd.analysis.structure import rdf, rdf_mae  # noqa: E402
from longmd.analysis.transport import msd  # noqa: E402
from longmd.dynamics.cores import ForceField, evaluator_for  # noqa: E402
from longmd.dynamics.failures import REASONS, Limits, check_replicas  # noqa: E402
from longmd.dynamics.neighbor_policy import VerletNeighbors  # noqa: E402
from longmd.dynamics.propagator import build_integrator  # noqa: E402
from longmd.dynamics.rollout import rollout  # noqa: E402
from longmd.dynamics.state import MDState, maxwell_boltzmann_momenta  # noqa: E402
from longmd.evaluation.parts.stride import seconds_per_ps  # noqa: E402
from longmd.io.read import read_trajectories  # noqa: E402
from longmd.models.egnn import egnn_potential  # noqa: E402
from longmd.models.io import load_model, open_model  # noqa: E402
from longmd.units import KB_EV_PER_K  # noqa: E402

EMT = "ase:ase.calculators.emt:EMT"


def train(args, out: Path) -> Path:
    run = out / "train"
    best = run / "best.pt"
    if (run / "checkpoint.pt").is_file() and best.is_file() and (out / "train.done").is_file():
        return best
    cmd = [sys.executable, "-m", "longmd", "train", "stride", "--out", str(run), "--threads", "1",
           "--set", f"data.paths=[{args.data}]", "--set", f"model.stride_fs={args.stride_fs}",
           "--set", f"training.max_minutes={args.train_minutes}", "--set", f"training.s_max={args.k_max + 1}",
           "--set", "training.val_length=8", "--set", "training.max_epochs_per_s=40",
           "--set", "training.patience=4", "--set", "training.batch_size=4", "--set", "data.test_fraction=0"]
    if (run / "checkpoint.pt").is_file():
        cmd.append("--resume")
    subprocess.run(cmd, check=True)
    (out / "train.done").write_text("")
    return best


def layers_of(z: np.ndarray, gap: float = 0.5) -> np.ndarray:
    """Layer index of every atom from its height (atoms within ``gap`` Å of each other share a layer)."""
    order = np.argsort(z)
    layer = np.zeros(len(z), dtype=int)
    layer[order] = np.concatenate([[0], np.cumsum(np.diff(z[order]) > gap)])
    return layer


def run_md(propagator, state: MDState, n_steps: int, every: int) -> dict:
    """Positions (unwrapped) and momenta every ``every`` steps, until the end or a failure (recorded)."""
    frames = {"positions": [], "momenta": []}
    stopped = {}

    def keep(k: int, s: MDState) -> bool:
        code = int(check_replicas(s, Limits(0.5, 5000.0))[0, 0])
        if code:
            stopped.update(step=k, reason=REASONS[code])
            return False
        if k % every == 0:
            frames["positions"].append(s.positions.detach().cpu().numpy().copy())
            frames["momenta"].append(s.momenta.detach().cpu().numpy().copy())
        return True

    start = time.perf_counter()
    with torch.no_grad():
        rollout(propagator, state, n_steps, store=False, on_step=keep)
    return {k: np.stack(v) for k, v in frames.items()} | {"wall_s": time.perf_counter() - start,
                                                          "stopped": stopped or None}


def analyse(run: dict, masses: np.ndarray, layer: np.ndarray, cell: np.ndarray, interval_fs: float) -> dict:
    if run["stopped"] is not None and len(run["positions"]) < 8:
        return {"stopped": run["stopped"], "frames": len(run["positions"]), "wall_s": run["wall_s"]}
    half = len(run["positions"]) // 2
    kinetic = 0.5 * (run["momenta"][half:] ** 2).sum(-1) / masses  # (T, N)
    temps = {int(k): float(kinetic[:, layer == k].mean() * 2 / (3 * KB_EV_PER_K)) for k in np.unique(layer)}
    lag_fs, values = {}, {}
    for k in np.unique(layer):
        lag_fs, m = msd(run["positions"][half:], interval_fs, atoms=layer == k)
        values[int(k)] = m.tolist()
    r, n_r = rdf(run["positions"][half:], cell, np.array([True, True, False]), r_max=6.0, n_bins=120)
    return {"layer_temperature_K": temps, "msd_lag_fs": np.asarray(lag_fs).tolist(), "layer_msd_A2": values,
            "r": r.tolist(), "pair_density": n_r.tolist(), "wall_s": run["wall_s"], "frames": len(run["positions"]),
            "stopped": run["stopped"]}


def md(args, out: Path, best: Path) -> dict:
    path = out / "md.json"
    if path.is_file():
        return json.loads(path.read_text())
    trajectories = read_trajectories([args.data])
    tr = trajectories[0]
    dt = tr.timestep_fs
    k = int(round(args.stride_fs / dt))
    atoms = tr.atoms(len(tr) - 1)
    layer = layers_of(atoms.positions[:, 2])
    emt = open_model(EMT)
    emt.pbc = np.array([True, True, False])
    predictor = load_model(best).double()
    results = {}
    n_strides = int(round(args.ps * 1000 / args.stride_fs))
    for name, seed in (("predictor", 11), ("verlet_a", 12), ("verlet_b", 13)):
        state = MDState.from_atoms(atoms)
        gen = torch.Generator().manual_seed(seed)
        state = state.replace(momenta=maxwell_boltzmann_momenta(state.masses, state.system, args.temperature_K, gen))
        if name == "predictor":
            companion = ForceField(emt, VerletNeighbors(emt.cutoff, 1.0, isolate_nonfinite=True), forces=False)
            propagator = build_integrator(evaluator_for(predictor, VerletNeighbors(predictor.cutoff, 1.0,
                                                                                   isolate_nonfinite=True)),
                                          args.stride_fs, "langevin", args.temperature_K, 1.0 / args.tau_fs,
                                          seed=seed, filters=["com", "energy"], energy_model=companion)
            run = run_md(propagator, state, n_strides, 1)
        else:
            propagator = build_integrator(ForceField(emt, VerletNeighbors(emt.cutoff, 1.0)), dt, "langevin",
                                          args.temperature_K, 1.0 / args.tau_fs, seed=seed)
            run = run_md(propagator, state, n_strides * k, k)
        results[name] = analyse(run, tr.masses, layer, tr.cell[0], args.stride_fs)
        print(name, "done in", round(run["wall_s"]), "s; stopped:", run["stopped"], flush=True)
    ref, other = (np.asarray(results[n]["pair_density"]) for n in ("verlet_a", "verlet_b"))
    learned = results["predictor"].get("pair_density")
    results["pair_density_mae"] = {"predictor_vs_verlet": None if learned is None else rdf_mae(np.asarray(learned),
                                                                                               ref),
                                   "noise_verlet_vs_verlet": rdf_mae(other, ref)}
    results["temperature_K"] = args.temperature_K
    path.write_text(json.dumps(results, indent=1))
    return results


def speed(args, out: Path, best: Path) -> dict:
    tr = read_trajectories([args.data])[0]
    state = MDState.from_atoms(tr.atoms(0))
    emt = open_model(EMT)
    emt.pbc = np.array([True, True, False])
    predictor = load_model(best).double()
    n_params = sum(p.numel() for p in predictor.parameters())
    egnn = egnn_potential([13], preset="small").double()
    companion = ForceField(emt, VerletNeighbors(emt.cutoff, 1.0), forces=False)
    learned = build_integrator(evaluator_for(predictor, VerletNeighbors(predictor.cutoff, 1.0)), args.stride_fs,
                               filters=["com", "energy"], energy_model=companion)
    bare = build_integrator(evaluator_for(predictor, VerletNeighbors(predictor.cutoff, 1.0)), args.stride_fs,
                            filters=["com"])
    dt = tr.timestep_fs
    out_ = {
        "predictor_filtered": seconds_per_ps(learned, state, 20),
        "predictor_com_only": seconds_per_ps(bare, state, 20),
        "verlet_emt": seconds_per_ps(build_integrator(ForceField(emt, VerletNeighbors(emt.cutoff, 1.0)), dt),
                                     state, 100),
        "verlet_egnn": seconds_per_ps(build_integrator(ForceField(egnn, VerletNeighbors(egnn.cutoff, 1.0)), dt),
                                      state, 100),
        "parameters": {"predictor": n_params, "egnn": sum(p.numel() for p in egnn.parameters())},
    }
    out_["speedup_vs_egnn_filtered"] = out_["verlet_egnn"] / out_["predictor_filtered"]
    out_["speedup_vs_emt_filtered"] = out_["verlet_emt"] / out_["predictor_filtered"]
    return out_


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    md_ = results["md"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for name in ("verlet_a", "verlet_b", "predictor"):
        r = md_[name]
        if "pair_density" not in r:
            continue
        style = {"lw": 2.0, "color": "black"} if name == "verlet_a" else {"lw": 1.0}
        axes[0].plot(r["r"], r["pair_density"], label=name, **style)
        layers = sorted(r["layer_temperature_K"], key=int)
        axes[1].plot([int(k) for k in layers], [r["layer_temperature_K"][k] for k in layers], "o-", label=name)
        top = layers[-1]
        axes[2].plot(r["msd_lag_fs"], r["layer_msd_A2"][top], label=f"{name}, top layer")
    axes[0].set(xlabel="r (Å)", ylabel="pair density n(r) (1/Å³)", title="structure (second half)")
    axes[1].axhline(md_["temperature_K"], color="grey", ls="--")
    axes[1].set(xlabel="layer (bottom = 0)", ylabel="T (K)", title="temperature per layer")
    axes[2].set(xlabel="lag (fs)", ylabel="MSD (Å²)", title="MSD of the top layer")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="stride data of the slab (longmd datagen stride-data)")
    p.add_argument("--out", default="runs/long_stride")
    p.add_argument("--stride-fs", type=float, default=64.0)
    p.add_argument("--k-max", type=int, default=2, help="longest chain of strides in training")
    p.add_argument("--train-minutes", type=float, default=20.0)
    p.add_argument("--ps", type=float, default=20.0, help="simulated time of each MD run")
    p.add_argument("--temperature-K", type=float, default=500.0)
    p.add_argument("--tau-fs", type=float, default=100.0, help="Langevin time constant (friction = 1/tau)")
    args = p.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    best = train(args, out)
    results = {"environment": environment(), "args": vars(args), "md": md(args, out, best),
               "speed_s_per_ps": speed(args, out, best)}
    (out / "long_stride.json").write_text(json.dumps(results, indent=1))
    plot(results, out / "long_stride.png")
    m = results["md"]
    print(json.dumps({"layer_T": {n: m[n].get("layer_temperature_K") for n in ("predictor", "verlet_a", "verlet_b")},
                      "predictor_stopped": m["predictor"].get("stopped"),
                      "pair_density_mae": m["pair_density_mae"], "speed": results["speed_s_per_ps"]}, indent=1))


if __name__ == "__main__":
    main()
