"""Small reference trajectories for the data-layer tests (ASE EMT + velocity Verlet, a few ms each)."""

from __future__ import annotations

import numpy as np
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.md.verlet import VelocityVerlet

from longmd.data.trajectory import Trajectory


def emt_frames(n_steps: int = 12, dt_fs: float = 2.0, seed: int = 0, drift: float = 0.05) -> list[Atoms]:
    """Velocity-Verlet frames of a rattled 8-atom Cu cell, with a centre-of-mass drift of ``drift`` Å/fs
    so atoms cross the periodic boundaries; each frame has momenta, energy, forces and time info."""
    rng = np.random.default_rng(seed)
    atoms = bulk("Cu", cubic=True) * (2, 1, 1)
    atoms.rattle(0.05, rng=rng)
    atoms.positions -= 0.4  # atoms start just below 0, so with the drift they cross the boundary
    atoms.calc = EMT()
    masses = atoms.get_masses()[:, None]
    velocities = rng.normal(0.0, 0.02, (len(atoms), 3)) * units.Angstrom / units.fs
    velocities += np.array([1.0, 0.6, 0.3]) * drift / units.fs
    atoms.set_momenta(masses * velocities)
    dyn = VelocityVerlet(atoms, timestep=dt_fs * units.fs)
    frames: list[Atoms] = []

    def store() -> None:
        frame = atoms.copy()
        frame.calc = SinglePointCalculator(frame, energy=atoms.get_potential_energy(), forces=atoms.get_forces())
        frame.info.update(timestep_fs=dt_fs, time_fs=dyn.nsteps * dt_fs)
        frames.append(frame)

    dyn.attach(store, interval=1)
    dyn.run(n_steps - 1)
    return frames


def frames_to_trajectory(frames: list[Atoms], name: str = "emt", dt_fs: float = 2.0) -> Trajectory:
    """A Trajectory straight from ASE frames (no file)."""
    return Trajectory(
        name=name,
        numbers=frames[0].numbers,
        masses=frames[0].get_masses(),
        positions=np.array([f.positions for f in frames]),
        cell=np.array([f.cell.array for f in frames]),
        pbc=frames[0].pbc,
        forces=np.array([f.calc.results["forces"] for f in frames]),
        energy=np.array([f.calc.results["energy"] for f in frames]),
        velocities=np.array([f.get_velocities() for f in frames]),
        timestep_fs=dt_fs,
    )


def wrapped(frames: list[Atoms]) -> list[Atoms]:
    """Copies with positions wrapped into the cell (calculator results kept)."""
    out = []
    for frame in frames:
        copy = frame.copy()
        copy.wrap()
        copy.calc = SinglePointCalculator(copy, **frame.calc.results)
        out.append(copy)
    return out
