"""Reference data of the inductive-bias paper's two systems, with CHGNet standing in for DFT (small cells for 2
CPU cores):

* ``sic``: zinc-blende 3C-SiC, 2x2x2 cubic cells (64 atoms), trajectories at temperatures spread over
  1500-3500 K (the paper's range; the hottest may melt);
* ``gese2``: liquid/amorphous GeSe2 (24 Ge + 48 Se at 4.2 g/cm^3): random atoms, relaxed, melted at 2500 K
  once; every trajectory then decorrelates in the melt with its own seed and is quenched (linear Langevin
  ramp) to its temperature in 1100-1800 K.

Every trajectory equilibrates with Langevin at its temperature, then runs NVE with velocity Verlet, storing every
step (positions, momenta, forces, energy), so the data feed Dynamic Training. Trajectories run in single-threaded
workers, each written atomically with a sidecar of its wall time, temperature and energy drift, so a killed run
resumes where it stopped; ``assemble`` packs them into one rounded, xz-compressed extxyz file plus metadata
(protocol, versions, generation time, drift).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.build import bulk
from ase.io import read
from ase.md.velocitydistribution import Stationary
from ase.md.verlet import VelocityVerlet
from ase.optimize import FIRE

from longmd.datagen import common


@dataclass
class BulkProtocol:
    """Every choice of one system's reference runs (stored in the metadata)."""

    system: str
    n_trajectories: int = 8
    n_frames: int = 300  # stored NVE frames per trajectory, first one included
    timestep_fs: float = 1.0
    temperatures_K: tuple[float, float] = (1500.0, 3500.0)  # linearly spread over the trajectories
    equilibrate_steps: int = 200  # Langevin at the trajectory's temperature before the NVE part
    friction_per_fs: float = 0.01
    melt_K: float | None = None  # None: a crystal, no melt
    melt_steps: int = 0  # Langevin at melt_K once, shared by all trajectories
    decorrelate_steps: int = 0  # Langevin at melt_K per trajectory, own seed
    quench_steps: int = 0  # linear ramp melt_K -> the trajectory's temperature
    repeat: int = 2  # crystal: cubic cells per direction
    lattice_A: float = 4.36  # crystal: cubic lattice constant
    n_formula_units: int = 24  # amorphous: formula units of GeSe2
    density_g_cm3: float = 4.2  # amorphous: density of the random start
    min_distance_A: float = 2.0  # amorphous: closest approach of the random start
    relax_steps: int = 100  # amorphous: FIRE steps on the random start
    seed: int = 2026
    workers: int = 1
    round_positions: int = 5
    round_momenta: int = 5
    round_forces: int = 4
    extra: dict = field(default_factory=dict)


PROTOCOLS = {
    "sic": BulkProtocol("sic"),
    "gese2": BulkProtocol("gese2", timestep_fs=2.0, temperatures_K=(1100.0, 1800.0), equilibrate_steps=100,
                          melt_K=2500.0, melt_steps=1000, decorrelate_steps=100, quench_steps=200),
}
DESCRIPTIONS = {
    "sic": "zinc-blende 3C-SiC (2x2x2 cubic cells, 64 atoms), NVE after Langevin equilibration at 1500-3500 K",
    "gese2": "liquid GeSe2 (24 Ge + 48 Se, 4.2 g/cm^3), melted at 2500 K, quenched to 1100-1800 K, then NVE",
}


def protocol_for(system: str, **changes) -> BulkProtocol:
    """The default protocol of ``system`` (sic | gese2) with ``changes``."""
    if system not in PROTOCOLS:
        raise ValueError(f"unknown system {system!r} (available: {', '.join(PROTOCOLS)})")
    return replace(PROTOCOLS[system], **changes)


def temperatures(protocol: BulkProtocol) -> np.ndarray:
    lo, hi = protocol.temperatures_K
    return np.linspace(lo, hi, protocol.n_trajectories)


def random_gese2(protocol: BulkProtocol, rng: np.random.Generator) -> Atoms:
    """GeSe2 atoms placed at random in a cubic cell of the protocol's density, no two closer than its minimum."""
    n = protocol.n_formula_units
    numbers = [32] * n + [34] * (2 * n)
    mass = Atoms(numbers=numbers).get_masses().sum() * 1.66053907e-24  # g
    side = (mass / protocol.density_g_cm3) ** (1 / 3) * 1e8  # Å
    positions: list[np.ndarray] = []
    while len(positions) < len(numbers):
        trial = rng.random(3) * side
        d = np.array(positions) - trial if positions else np.zeros((0, 3))
        d -= side * np.round(d / side)
        if not len(d) or np.min(np.linalg.norm(d, axis=1)) >= protocol.min_distance_A:
            positions.append(trial)
    return Atoms(numbers=numbers, positions=positions, cell=[side] * 3, pbc=True)


def prepare_start(protocol: BulkProtocol, work: Path) -> Atoms:
    """The shared start (crystal, or relaxed and melted random GeSe2); cached in ``work/start.traj``."""
    path = work / "start.traj"
    if path.exists():
        return read(path)
    started = time.perf_counter()
    rng = np.random.default_rng(protocol.seed)
    if protocol.melt_K is None:
        atoms = bulk("SiC", "zincblende", a=protocol.lattice_A, cubic=True).repeat(protocol.repeat)
    else:
        atoms = random_gese2(protocol, rng)
        atoms.calc = common.chgnet_calculator()
        FIRE(atoms, logfile=None).run(fmax=0.2, steps=protocol.relax_steps)
        common.thermalize_momenta(atoms, temperature_K=protocol.melt_K, rng=rng)
        Stationary(atoms)
        common.langevin(atoms, protocol.timestep_fs, protocol.melt_K, protocol.friction_per_fs,
                        rng).run(protocol.melt_steps)
    common.atomic_write(path, atoms, format="traj")
    (work / "start.json").write_text(json.dumps({"wall_s": time.perf_counter() - started}))
    return read(path)


def run_trajectory(protocol: BulkProtocol, work: Path, index: int) -> Path:
    """Run trajectory ``index`` (skipped if its file exists); returns the file path."""
    path = work / f"traj_{index:03d}.extxyz"
    if path.exists():
        return path
    import torch

    torch.set_num_threads(1)
    started = time.perf_counter()
    rng = np.random.default_rng([protocol.seed, index])
    target = float(temperatures(protocol)[index])
    atoms = prepare_start(protocol, work)
    atoms.calc = common.chgnet_calculator()
    if protocol.melt_K is None:
        common.thermalize_momenta(atoms, temperature_K=target, rng=rng)
        Stationary(atoms)
    else:
        hot = common.langevin(atoms, protocol.timestep_fs, protocol.melt_K, protocol.friction_per_fs, rng)
        hot.run(protocol.decorrelate_steps)
        for step in range(protocol.quench_steps):
            hot.set_temperature(temperature_K=protocol.melt_K + (target - protocol.melt_K) * (step + 1)
                                / protocol.quench_steps)
            hot.run(1)
    common.langevin(atoms, protocol.timestep_fs, target, protocol.friction_per_fs, rng).run(protocol.equilibrate_steps)
    frames = [common.frame(atoms, index, 0, protocol.timestep_fs)]
    dyn = VelocityVerlet(atoms, timestep=protocol.timestep_fs * units.fs)
    for step in range(1, protocol.n_frames):
        dyn.run(1)
        frames.append(common.frame(atoms, index, step, protocol.timestep_fs))
    kinetic = np.array([a.get_kinetic_energy() for a in frames])
    info = {"traj_id": index, "target_K": target, "wall_s": time.perf_counter() - started,
            "mean_nve_K": float(kinetic.mean() / (1.5 * units.kB * len(atoms))),
            "drift_meV_per_atom_ps": common.energy_drift_meV_per_atom_ps(frames, protocol.timestep_fs)}
    (work / f"traj_{index:03d}.json").write_text(json.dumps(info))
    common.atomic_write(path, frames, format="extxyz")  # last: its existence marks the trajectory done
    return path


def _worker(args: tuple[BulkProtocol, str, int]) -> int:
    protocol, work, index = args
    run_trajectory(protocol, Path(work), index)
    return index


def assemble(protocol: BulkProtocol, work: Path, out: Path) -> Path:
    """Pack all trajectories into ``out/<system>.extxyz.xz`` and write ``out/<system>.json``."""
    target, meta = common.pack_runs(protocol, work, out, protocol.system, "drift_meV_per_atom_ps")
    meta["description"] = DESCRIPTIONS[protocol.system] + "; CHGNet standing in for DFT"
    (out / f"{protocol.system}.json").write_text(json.dumps(meta, indent=2) + "\n")
    return target


def generate(out: Path, protocol: BulkProtocol, progress: bool = True) -> Path:
    """Run (or resume) the protocol and pack the result into ``out``; a resume must use the same protocol."""
    return common.generate_runs(out, protocol, f"{protocol.system} trajectories", prepare_start, _worker, assemble,
                                progress)
