"""What every reference-data recipe shares: the CHGNet calculator, thermostats, atomic writes, rounding for
compact files, the energy drift of NVE runs, versions for the metadata, and a resumable pool of workers."""

from __future__ import annotations

import multiprocessing as mp
import os
import platform
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from ase.md import velocitydistribution
from ase.md.langevin import Langevin

# thermalize_momenta is ASE >= 3.28's name of MaxwellBoltzmannDistribution (same draw).
thermalize_momenta = getattr(velocitydistribution, "thermalize_momenta", None) or (
    velocitydistribution.MaxwellBoltzmannDistribution)

CHGNET_NEEDS = "CHGNet: pip install 'longmd[datagen]' (chgnet; its weights ship in the wheel)"


def chgnet_calculator():
    """CHGNet on the CPU (the pretrained model of the installed wheel)."""
    from chgnet.model.dynamics import CHGNetCalculator

    return CHGNetCalculator(use_device="cpu", on_isolated_atoms="ignore")


def langevin(atoms: Atoms, timestep_fs: float, temperature_K: float, friction_per_fs: float,
             rng: np.random.Generator) -> Langevin:
    """ASE Langevin with the centre of mass fixed (``fixcm=True``, ASE's old default, kept so the embedded example
    is reproducible; ASE >= 3.28's warning about that default is silenced)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*fixcm", category=FutureWarning)
        return Langevin(atoms, timestep=timestep_fs * units.fs, temperature_K=temperature_K,
                        friction=friction_per_fs / units.fs, rng=rng)


def atomic_write(path: Path, images, format: str) -> None:
    """Write ``images`` to ``path`` through a temporary file renamed at the end (a kill leaves no half file)."""
    tmp = path.with_name(".tmp-" + path.name)  # keeps the extension, so compression still applies
    write(tmp, images, format=format)
    os.replace(tmp, path)


def energy_drift_meV_per_atom_ps(frames: list[Atoms], timestep_fs: float) -> float:
    """Slope of a linear fit of the total energy of consecutive frames, meV/atom/ps."""
    e_tot = np.array([a.get_potential_energy() + a.get_kinetic_energy() for a in frames])
    t_ps = np.arange(len(frames)) * timestep_fs / 1000.0
    slope = np.polyfit(t_ps, e_tot, 1)[0]
    return float(slope * 1000.0 / len(frames[0]))


def frame(atoms: Atoms, traj_id: int, step: int, timestep_fs: float, pbc=True) -> Atoms:
    """A stored frame of a running MD: a copy with the calculator's energy and forces, ``pbc`` and the info keys
    longmd reads (``traj_id``, ``step``, ``timestep_fs``)."""
    out = atoms.copy()
    out.pbc = pbc
    out.calc = SinglePointCalculator(
        out, energy=atoms.get_potential_energy(), forces=atoms.get_forces(apply_constraint=False)
    )
    out.info.update(traj_id=traj_id, step=step, timestep_fs=timestep_fs)
    return out


def rounded(atoms: Atoms, protocol: Any) -> Atoms:
    """A copy with positions, momenta and forces rounded to ``protocol.round_positions`` (Å),
    ``round_momenta`` (amu·Å/ASE-time) and ``round_forces`` (eV/Å) decimals, far below the reference's own error,
    so files compress well; energies to µeV."""
    out = atoms.copy()
    out.positions = np.round(atoms.positions, protocol.round_positions)
    out.set_momenta(np.round(atoms.get_momenta(), protocol.round_momenta))
    out.calc = SinglePointCalculator(
        out,
        energy=round(float(atoms.get_potential_energy()), 6),
        forces=np.round(atoms.get_forces(), protocol.round_forces),
    )
    return out


def pack_runs(protocol: Any, work: Path, out: Path, name: str, drift_key: str) -> tuple[Path, dict]:
    """Pack runs ``work/traj_{i:03d}.extxyz`` (rounded) into ``out/<name>.extxyz.xz``; return it and the metadata
    every recipe shares: protocol, versions, units, sizes, generation time (``work/start.json``'s ``wall_s`` plus
    each run's) and the runs' energy drifts (``drift_key`` of their ``traj_{i:03d}.json``)."""
    import json
    from dataclasses import asdict

    from ase.io import read

    frames: list[Atoms] = []
    per_traj = []
    for index in range(protocol.n_trajectories):
        per_traj.append(json.loads((work / f"traj_{index:03d}.json").read_text()))
        frames += [rounded(a, protocol) for a in read(work / f"traj_{index:03d}.extxyz", index=":")]
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{name}.extxyz.xz"
    atomic_write(target, frames, format="extxyz")
    drifts = [abs(t[drift_key]) for t in per_traj]
    start = json.loads((work / "start.json").read_text())
    return target, {
        "name": name,
        "reference": reference_versions(),
        "protocol": asdict(protocol),
        "units": {"positions": "Å", "energy": "eV", "forces": "eV/Å", "momenta": "amu·Å/ASE-time"},
        "n_frames": len(frames),
        "n_atoms": len(frames[0]),
        "generation_time_s": start["wall_s"] + sum(t["wall_s"] for t in per_traj),
        "max_abs_drift_meV_per_atom_ps": max(drifts),
        "mean_abs_drift_meV_per_atom_ps": float(np.mean(drifts)),
        "file_MB": target.stat().st_size / 1e6,
        "trajectories": per_traj,
    }


def reference_versions() -> dict:
    """The reference model and the versions that produced a dataset."""
    import ase
    import chgnet
    import torch

    return {
        "model": "CHGNet (pretrained, shipped in the chgnet wheel)",
        "chgnet": chgnet.__version__,
        "torch": torch.__version__,
        "ase": ase.__version__,
        "python": platform.python_version(),
    }


def run_all(todo: Iterable[int], worker: Callable[[Any], int], args: Callable[[int], Any], workers: int,
            bar) -> None:
    """``worker(args(i))`` for every index of ``todo``: in this process (``workers`` <= 1) or in single-threaded
    spawned processes; ``bar`` (tqdm) advances as each one finishes."""
    todo = list(todo)
    if todo and workers <= 1:
        for index in todo:
            worker(args(index))
            bar.update(1)
    elif todo:
        ctx = mp.get_context("spawn")
        with ctx.Pool(max(1, min(workers, len(todo)))) as pool:
            for _ in pool.imap_unordered(worker, [args(i) for i in todo]):
                bar.update(1)


def generate_runs(out: Path, protocol: Any, desc: str, prepare: Callable, worker: Callable,
                  assemble: Callable, progress: bool = True) -> Path:
    """Run (or resume) a recipe's trajectories in ``out/work`` and pack them into ``out``: ``prepare(protocol,
    work)`` once, ``worker((protocol, work, i))`` for each missing ``traj_{i:03d}.extxyz``, then
    ``assemble(protocol, work, out)``. A resume must use the same protocol (saved as ``work/protocol.json``)."""
    import json
    from dataclasses import asdict

    from tqdm import tqdm

    work = Path(out) / "work"
    work.mkdir(parents=True, exist_ok=True)
    saved = work / "protocol.json"
    wanted = json.loads(json.dumps(asdict(protocol)))
    if saved.exists() and json.loads(saved.read_text()) != wanted:
        raise ValueError(f"{out}: holds a run of another protocol ({saved}); use a new folder")
    saved.write_text(json.dumps(wanted, indent=2))
    prepare(protocol, work)
    todo = [i for i in range(protocol.n_trajectories) if not (work / f"traj_{i:03d}.extxyz").exists()]
    bar = tqdm(total=protocol.n_trajectories, initial=protocol.n_trajectories - len(todo), disable=not progress,
               desc=desc)
    run_all(todo, worker, lambda i: (protocol, str(work), i), protocol.workers, bar)
    bar.close()
    return assemble(protocol, work, Path(out))
