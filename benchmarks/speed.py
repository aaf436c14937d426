"""Speed and memory of longmd on the embedded 57-atom example; writes ``OUT/speed.json``.

Parts (``--parts``):
  md    MD throughput (steps/s, ns/day) of EGNN presets for 1..128 batched replicas, against ASE's
        VelocityVerlet driving the same model through LongMDCalculator; with ``--mace-channels 32,128``
        (mace-torch) the same for MACE: batched through longmd.models.mace, ASE loop through MACECalculator;
        per replica count also the FLOPs of the step's matrix products (profiler) per second, as a fraction of
        this device's measured float32 matrix-product throughput: the distance to the hardware limit;
  dt    time and peak memory of one DT training step (loss + backward) vs S, for the demo and paper configs;
  data  neighbour-list building and window batching time per epoch, beside the model step, so the
        bottleneck is visible.

Examples:
  python benchmarks/speed.py --out runs/bench                       # CPU, modest sizes
  python benchmarks/speed.py --out runs/bench --device cuda --steps 200 --s-max 11
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import synchronize, write_json
from longmd.calculator import LongMDCalculator
from longmd.config import load_config
from longmd.data.batching import collate_windows
from longmd.data.reference_neighbors import ReferenceNeighbors
from longmd.dynamics.cores import ForceField
from longmd.dynamics.neighbor_policy import VerletNeighbors
from longmd.dynamics.propagator import build_integrator
from longmd.dynamics.rollout import rollout
from longmd.dynamics.state import MDState
from longmd.examples import resolve
from longmd.io.read import read_trajectories
from longmd.models import inference
from longmd.models.egnn import egnn_potential
from longmd.models.inference import inference_model
from longmd.training.trainer import Trainer

CONFIGS = Path(__file__).resolve().parents[1] / "src" / "longmd" / "configs"


def _example_atoms():
    trajectories = read_trajectories([resolve("example:h2_pd6_graphene")])
    return trajectories, trajectories[0].atoms(0)


def _md_rate(model, atoms, replicas: int, steps: int, device, dtype, timestep_fs: float) -> float:
    """Replica-steps per second of batched NVE MD (Verlet lists, no autograd graph kept)."""
    state = MDState.from_atoms([atoms] * replicas, device=device, dtype=dtype)
    integrator = build_integrator(ForceField(model, VerletNeighbors(model.cutoff, skin=1.0)), timestep_fs)
    warm = rollout(integrator, state, 3, store=False)
    synchronize(device)
    start = time.perf_counter()
    rollout(integrator, warm.state, steps, store=False)
    synchronize(device)
    return replicas * steps / (time.perf_counter() - start)


def _step_flops(model, atoms, replicas: int, device, dtype, timestep_fs: float) -> float:
    """Floating-point operations of one batched MD step, from the profiler's count of every matrix product
    (forward and backward; elementwise work is not counted, so this is the step's matmul arithmetic)."""
    from torch.profiler import ProfilerActivity, profile

    state = MDState.from_atoms([atoms] * replicas, device=device, dtype=dtype)
    integrator = build_integrator(ForceField(model, VerletNeighbors(model.cutoff, skin=1.0)), timestep_fs)
    warm = rollout(integrator, state, 2, store=False).state
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, with_flops=True) as prof:
        rollout(integrator, warm, 1, store=False)
    return float(sum(e.flops for e in prof.key_averages() if e.flops))


def matmul_throughput(device, dtype, size: int = 1024, repeats: int = 10) -> float:
    """This machine's measured matrix-product throughput, FLOP/s (best of three rounds of square products)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(3):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        synchronize(device)
        best = min(best, (time.perf_counter() - start) / repeats)
    return 2.0 * size**3 / best


def _ase_rate(calculator, atoms, steps: int, timestep_fs: float) -> float:
    from ase import units
    from ase.md.verlet import VelocityVerlet

    atoms = atoms.copy()
    atoms.calc = calculator
    dyn = VelocityVerlet(atoms, timestep=timestep_fs * units.fs)
    dyn.run(3)
    start = time.perf_counter()
    dyn.run(steps)
    return steps / (time.perf_counter() - start)


def _md_models(args, species, device):
    """(name, model, ASE calculator of the same network) for each EGNN preset and each MACE size asked for."""
    for preset in args.presets:
        model, _ = inference_model(egnn_potential(species, preset=preset), device, torch.float32)  # as simulate
        yield f"egnn-{preset}", model, LongMDCalculator(model, device=str(device), dtype="float32")
    if args.mace_channels:
        from mace.calculators import MACECalculator

        from longmd.models.mace import build_mace

        for channels in args.mace_channels:
            model = build_mace(species, channels=channels, r_max=args.mace_r_max).to(device=device).float().eval()
            with tempfile.TemporaryDirectory() as tmp:  # MACECalculator reads the module from a file
                torch.save(model.term("mace").module, Path(tmp) / "mace.model")
                calc = MACECalculator(model_paths=str(Path(tmp) / "mace.model"), device=str(device),
                                      default_dtype="float32")
            yield f"mace-{channels}x1o", model, calc


def md_throughput(args, device, peak: float) -> list[dict]:
    trajectories, atoms = _example_atoms()
    timestep = trajectories[0].timestep_fs
    species = sorted({int(z) for z in atoms.numbers})
    print(f"matrix products on this device: {peak / 1e9:.1f} GFLOP/s (float32, {torch.get_num_threads()} threads)")
    rows = []
    for name, model, calculator in _md_models(args, species, device):
        ase_rate = _ase_rate(calculator, atoms, args.steps, timestep)
        row = {"model": name, "parameters": model.n_parameters(), "cutoff_A": model.cutoff,
               "ase_loop_steps_per_s": ase_rate, "ase_loop_ns_per_day": ase_rate * timestep * 86400 / 1e6,
               "batched": {}}
        for replicas in args.replicas:
            rate = _md_rate(model, atoms, replicas, args.steps, device, torch.float32, timestep)
            flops = _step_flops(model, atoms, replicas, device, torch.float32, timestep)
            achieved = flops * rate / replicas  # FLOP/s: one batched step advances every replica
            row["batched"][str(replicas)] = {
                "replica_steps_per_s": rate,
                "steps_per_s_per_replica": rate / replicas,
                "ns_per_day_per_replica": rate / replicas * timestep * 86400 / 1e6,
                "speedup_vs_ase_loop": rate / ase_rate,
                "matmul_flops_per_step": flops,
                "achieved_matmul_flops_per_s": achieved,
                "fraction_of_measured_matmul_peak": achieved / peak,
            }
            print(f"{name:11s} R={replicas:4d}: {rate:9.1f} replica-steps/s ({rate / ase_rate:6.1f}x its ASE loop), "
                  f"{achieved / 1e9:.2f} GFLOP/s in matrix products = {100 * achieved / peak:.1f}% of the peak")
        rows.append(row)
    maces = [r for r in rows if r["model"].startswith("mace")]
    for row in rows:
        row["speed_vs_mace"] = {}
        for mace in maces if not row["model"].startswith("mace") else []:
            rate = {r: v["replica_steps_per_s"] for r, v in mace["batched"].items()}
            ratios = {r: v["replica_steps_per_s"] / rate[r] for r, v in row["batched"].items() if r in rate}
            ratios["ase_loop"] = row["ase_loop_steps_per_s"] / mace["ase_loop_steps_per_s"]
            row["speed_vs_mace"][mace["model"]] = ratios
    return rows


def _trainer(config: str, device, s_max: int, out: Path) -> Trainer:
    cfg = load_config(CONFIGS / f"{config}.yaml", [f"out={out}", f"training.device={device}",
                                                   f"training.s_max={s_max}", "training.progress=false"])
    return Trainer(cfg, log=lambda *_: None)


def _saved_bytes(fn):
    """Bytes of the tensors autograd saves for backward while ``fn`` runs (activation memory, any device)."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return total, out


def dt_step(args, device) -> list[dict]:
    rows = []
    for config in args.configs:
        with tempfile.TemporaryDirectory() as tmp:
            trainer = _trainer(config, device, args.s_max, Path(tmp))
            batch = args.batch or trainer.cfg.training.batch_size
            for s in range(1, args.s_max + 1):
                candidates = trainer.train_windows(s)
                windows = candidates[:: max(1, len(candidates) // batch)][:batch]
                times = []
                for rep in range(args.reps + 1):
                    if device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(device)
                    synchronize(device)
                    start = time.perf_counter()
                    saved, (loss, _) = _saved_bytes(lambda w=windows, t=trainer: t.batch_loss(w))
                    loss.backward()
                    synchronize(device)
                    if rep:  # the first repetition warms up
                        times.append(time.perf_counter() - start)
                    trainer.model.zero_grad(set_to_none=True)
                peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
                row = {"config": config, "S": s, "batch": len(windows), "step_time_s": float(np.median(times)),
                       "saved_activations_MB": saved / 2**20, "cuda_peak_MB": peak}
                rows.append(row)
                print(f"{config:5s} S={s:2d}: {row['step_time_s']:.3f} s/step, "
                      f"{row['saved_activations_MB']:.1f} MB saved for backward")
    for config in args.configs:
        first = next(r for r in rows if r["config"] == config and r["S"] == 1)
        for r in rows:
            if r["config"] == config:
                r["time_ratio_vs_S1"] = r["step_time_s"] / first["step_time_s"]
                r["memory_ratio_vs_S1"] = r["saved_activations_MB"] / first["saved_activations_MB"]
    return rows


def data_costs(args, device) -> dict:
    trajectories, _ = _example_atoms()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        ReferenceNeighbors.build(trajectories, 5.25, cache_dir=tmp, progress=False)
        build = time.perf_counter() - start
        start = time.perf_counter()
        ReferenceNeighbors.build(trajectories, 5.25, cache_dir=tmp, progress=False)
        cached = time.perf_counter() - start
        trainer = _trainer("demo", device, 4, Path(tmp) / "run")
        windows = trainer.train_windows(4)[:8]
        start = time.perf_counter()
        for _ in range(5):
            collate_windows(trainer.trajectories, windows, trainer.neighbors, device=device, dtype=torch.float32)
        collate = (time.perf_counter() - start) / 5
        start = time.perf_counter()
        loss, _ = trainer.batch_loss(windows)
        loss.backward()
        synchronize(device)
        step = time.perf_counter() - start
    frames = sum(len(t) for t in trajectories)
    return {
        "frames": frames,
        "neighbor_lists_build_s": build,
        "neighbor_lists_per_frame_ms": 1000 * build / frames,
        "neighbor_lists_cached_load_s": cached,
        "collate_batch_of_8_windows_S4_s": collate,
        "demo_train_step_S4_batch8_s": step,
        "collate_share_of_step": collate / (collate + step),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--parts", default="md,dt,data")
    parser.add_argument("--presets", default="small,paper")
    parser.add_argument("--replicas", default="1,8,32,128")
    parser.add_argument("--steps", type=int, default=10, help="MD steps timed per measurement")
    parser.add_argument("--configs", default="demo,paper")
    parser.add_argument("--s-max", type=int, default=4)
    parser.add_argument("--batch", type=int, default=None, help="DT step batch (default: the config's)")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--mace-channels", default="", help="compare with MACE of these channel counts, e.g. 32,128 "
                        "(mace_run_train defaults otherwise, max_L 1, random weights; needs mace-torch)")
    parser.add_argument("--mace-r-max", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--exact-path", action="store_true",
                        help="no inference tables (the training path's model), to measure what they gain")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.exact_path:
        inference.TABULATE_MIN_FEATURES = 10**9  # nothing is worth tabulating: the exact path everywhere
    args.presets = args.presets.split(",")
    args.replicas = [int(r) for r in args.replicas.split(",")]
    args.configs = args.configs.split(",")
    args.mace_channels = [int(c) for c in args.mace_channels.split(",") if c]
    device = torch.device(args.device)
    parts = args.parts.split(",")
    result: dict = {"device": str(device), "threads": torch.get_num_threads()}
    if "md" in parts:
        result["matmul_peak_flops_per_s"] = peak = matmul_throughput(device, torch.float32)
        result["md_throughput"] = md_throughput(args, device, peak)
    if "dt" in parts:
        result["dt_step_vs_S"] = dt_step(args, device)
    if "data" in parts:
        result["data"] = data_costs(args, device)
    write_json(result, args.out, "speed.json")


if __name__ == "__main__":
    main()
