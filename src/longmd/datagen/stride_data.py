"""Training data for stride predictors, made cheaply with a companion potential (FlashMD's recipe).

For each of ``n_trajectories`` trajectories, at a temperature spread evenly over ``temperatures_K``: fresh
Maxwell-Boltzmann momenta, a Langevin run of ``thermalise_fs`` (the start decorrelates and equilibrates), then
NVE velocity Verlet at the fine ``timestep_fs`` with every step stored (positions, momenta, the companion's
energy and forces). All trajectories run together as replicas of longmd's batched engine; each is written
atomically as soon as the batch finishes, so a killed run resumes (finished trajectories are kept, the rest is
run again from its seed), with a JSON summary beside it. :func:`assemble` packs them into one ``.extxyz.xz``
with a metadata JSON (settings, companion, generation time, energy drift of every trajectory).

The companion is any model ``longmd`` opens: a longmd model file, ``mace:PATH`` or ``ase:module:Class`` (ASE's
EMT for the Al(110) slab of FlashMD's case study, :func:`al110_slab`).
"""

from __future__ import annotations

import json
import lzma
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.build import fcc110
from ase.io import read, write

from longmd.datagen.common import energy_drift_meV_per_atom_ps
from longmd.dynamics.cores import ForceField
from longmd.dynamics.neighbor_policy import VerletNeighbors
from longmd.dynamics.propagator import build_integrator
from longmd.dynamics.rollout import rollout
from longmd.dynamics.state import MDState, maxwell_boltzmann_momenta
from longmd.progress import step_progress


@dataclass
class StrideDataProtocol:
    """Every choice of the runs (stored in the metadata)."""

    n_trajectories: int = 8
    steps: int = 2000  # NVE steps per trajectory after thermalisation (steps + 1 frames stored)
    timestep_fs: float = 1.0
    temperatures_K: tuple[float, float] = (300.0, 600.0)  # spread evenly over the trajectories
    thermalise_fs: float = 500.0
    friction_per_fs: float = 0.01
    seed: int = 0
    skin: float = 1.0


def al110_slab(size: tuple[int, int, int] = (3, 4, 6), vacuum_A: float = 10.0) -> Atoms:
    """An Al(110) slab (FlashMD's case study), periodic in-plane: 72 atoms by default."""
    atoms = fcc110("Al", size=size, vacuum=vacuum_A, a=4.05)
    atoms.pbc = (True, True, False)
    return atoms


STRUCTURES = {"al110": al110_slab}


def open_structure(spec: str) -> Atoms:
    """A named structure (``al110``) or the last frame of any ase.io file."""
    if spec in STRUCTURES:
        return STRUCTURES[spec]()
    if not Path(spec).is_file():
        raise ValueError(f"structure {spec!r}: not a file and not one of the named structures "
                         f"({', '.join(STRUCTURES)})")
    return read(spec, index=-1)


def _path(out: Path, t: int) -> Path:
    return out / f"traj_{t:03d}.extxyz"


def generate(model: torch.nn.Module, atoms: Atoms, protocol: StrideDataProtocol, out: str | Path,
             progress: bool = True, dtype: torch.dtype = torch.float64) -> list[Path]:
    """Run the trajectories not yet in ``out`` (see the module doc); returns every trajectory file."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    p = protocol
    todo = [t for t in range(p.n_trajectories) if not _path(out, t).is_file()]
    if todo:
        started = time.perf_counter()
        temperatures = np.linspace(*p.temperatures_K, p.n_trajectories)
        if getattr(model, "pbc", "none") is None:  # an ASE calculator: the structure's periodicity
            model.pbc = np.asarray(atoms.pbc)
        field = ForceField(model.to(dtype=dtype), VerletNeighbors(model.cutoff or 0.0, p.skin))
        thermalise = int(round(p.thermalise_fs / p.timestep_fs))
        with step_progress(len(todo) * thermalise + p.steps, 0, progress, "stride data") as bar:
            starts = []
            for t in todo:  # each start thermalised at its own temperature, from its own seed
                state = MDState.from_atoms(atoms, dtype=dtype)
                gen = torch.Generator().manual_seed(p.seed * 1000 + t)
                state = state.replace(momenta=maxwell_boltzmann_momenta(state.masses, state.system,
                                                                        float(temperatures[t]), gen))
                langevin = build_integrator(field, p.timestep_fs, "langevin", float(temperatures[t]),
                                            p.friction_per_fs, seed=p.seed * 1000 + t)
                field.reset()
                done = rollout(langevin, state, thermalise, store=False, on_step=lambda k, s: bar.update(k > 0))
                starts.append(done.state.to_atoms()[0])
            state = MDState.from_atoms(starts, dtype=dtype)
            field.reset()
            frames: list[list[Atoms]] = [[] for _ in todo]

            def keep(k: int, s: MDState) -> None:
                bar.update(k > 0)
                for b, a in enumerate(s.to_atoms()):
                    a.info.update(traj_id=todo[b], step=k, timestep_fs=p.timestep_fs,
                                  temperature_K=float(temperatures[todo[b]]))
                    frames[b].append(a)

            rollout(build_integrator(field, p.timestep_fs), state, p.steps, store=False, on_step=keep)
        seconds = (time.perf_counter() - started) / len(todo)
        for b, t in enumerate(todo):
            for a in frames[b]:
                a.info["generation_s"] = seconds
            tmp = out / f".tmp-{_path(out, t).name}"
            write(tmp, frames[b], format="extxyz")
            drift = energy_drift_meV_per_atom_ps(frames[b], p.timestep_fs)
            summary = {"traj_id": t, "temperature_K": float(temperatures[t]), "n_frames": len(frames[b]),
                       "n_atoms": len(atoms), "drift_meV_per_atom_ps": drift, "generation_s": seconds}
            _path(out, t).with_suffix(".json").write_text(json.dumps(summary))
            tmp.replace(_path(out, t))  # last: the trajectory counts as done only with its summary
    return [_path(out, t) for t in range(p.n_trajectories)]


def assemble(out: str | Path, protocol: StrideDataProtocol, companion: str, structure: str) -> tuple[Path, Path]:
    """Pack the trajectory files into ``out/stride_data.extxyz.xz`` (streamed, not parsed again) and write
    ``out/stride_data.json`` from their summaries."""
    out = Path(out)
    info = [json.loads(_path(out, t).with_suffix(".json").read_text()) for t in range(protocol.n_trajectories)]
    data = out / "stride_data.extxyz.xz"
    tmp = out / ".tmp-stride_data.extxyz.xz"
    with lzma.open(tmp, "wb", preset=3) as packed:
        for t in range(protocol.n_trajectories):
            with _path(out, t).open("rb") as f:
                shutil.copyfileobj(f, packed, 1 << 20)
    tmp.replace(data)
    meta = {"companion": companion, "structure": structure, "protocol": asdict(protocol),
            "n_atoms": info[0]["n_atoms"], "n_frames": sum(i["n_frames"] for i in info), "trajectories": info,
            "generation_s_total": sum(i["generation_s"] for i in info)}
    (out / "stride_data.json").write_text(json.dumps(meta, indent=1))
    return data, out / "stride_data.json"
