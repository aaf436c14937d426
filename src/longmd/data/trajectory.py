"""The :class:`Trajectory` container: the arrays of one AIMD run over time, in ASE units.

Positions are kept exactly as stored (possibly wrapped into the cell); :func:`unwrap_positions` gives the
continuous path, following each atom across periodic boundaries by the minimum image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.cell import Cell


@dataclass
class Trajectory:
    """One MD trajectory (frames stored at a uniform interval ``timestep_fs``).

    Attributes:
        name: where it came from (file, plus the trajectory id when a file holds several).
        numbers: (N,) atomic numbers, int64.
        masses: (N,) amu.
        positions: (T, N, 3) Å, as stored (may be wrapped).
        cell: (T, 3, 3) Å, rows are lattice vectors (zeros along non-periodic directions are fine).
        pbc: (3,) bool.
        forces: (T, N, 3) eV/Å (reference forces).
        energy: (T,) eV (reference potential energies).
        velocities: (T, N, 3) Å/ASE-time (momenta / masses).
        timestep_fs: time between consecutive stored frames, fs.
    """

    name: str
    numbers: np.ndarray
    masses: np.ndarray
    positions: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    forces: np.ndarray
    energy: np.ndarray
    velocities: np.ndarray
    timestep_fs: float

    def __post_init__(self) -> None:
        self.numbers = np.ascontiguousarray(self.numbers, dtype=np.int64)
        self.pbc = np.broadcast_to(np.asarray(self.pbc, dtype=bool), (3,)).copy()
        for key in ("masses", "positions", "cell", "forces", "energy", "velocities"):
            setattr(self, key, np.ascontiguousarray(getattr(self, key), dtype=np.float64))
        self.timestep_fs = float(self.timestep_fs)
        n, t = self.numbers.shape[0], self.positions.shape[0] if self.positions.ndim else 0
        expected = {
            "numbers": (n,),
            "masses": (n,),
            "positions": (t, n, 3),
            "cell": (t, 3, 3),
            "forces": (t, n, 3),
            "energy": (t,),
            "velocities": (t, n, 3),
        }
        if self.numbers.ndim != 1:
            raise ValueError(f"Trajectory {self.name!r}: numbers must be 1-D, got shape {self.numbers.shape}")
        for key, shape in expected.items():
            if getattr(self, key).shape != shape:
                raise ValueError(
                    f"Trajectory {self.name!r}: {key} has shape {getattr(self, key).shape}, expected {shape}"
                )
        if t == 0:
            raise ValueError(f"Trajectory {self.name!r} has no frames")
        if not np.all(self.masses > 0):
            raise ValueError(f"Trajectory {self.name!r}: masses must be positive")
        if not (np.isfinite(self.timestep_fs) and self.timestep_fs > 0):
            raise ValueError(f"Trajectory {self.name!r}: timestep_fs must be > 0, got {self.timestep_fs}")

    def __len__(self) -> int:
        return int(self.positions.shape[0])

    @property
    def n_atoms(self) -> int:
        return int(self.numbers.shape[0])

    def atoms(self, t: int) -> Atoms:
        """Frame ``t`` as ASE Atoms with momenta and a SinglePointCalculator (energy, forces)."""
        atoms = Atoms(
            numbers=self.numbers,
            positions=self.positions[t],
            cell=self.cell[t],
            pbc=self.pbc,
            masses=self.masses,
            momenta=self.velocities[t] * self.masses[:, None],
        )
        atoms.calc = SinglePointCalculator(atoms, energy=float(self.energy[t]), forces=self.forces[t].copy())
        return atoms

    def slice(self, start: int, stop: int) -> Trajectory:
        """Frames ``start:stop`` as a new Trajectory (copies)."""
        if not 0 <= start < stop <= len(self):
            raise IndexError(f"slice({start}, {stop}) out of range for {len(self)} frames")
        s = slice(start, stop)
        return Trajectory(
            name=self.name,
            numbers=self.numbers.copy(),
            masses=self.masses.copy(),
            positions=self.positions[s].copy(),
            cell=self.cell[s].copy(),
            pbc=self.pbc.copy(),
            forces=self.forces[s].copy(),
            energy=self.energy[s].copy(),
            velocities=self.velocities[s].copy(),
            timestep_fs=self.timestep_fs,
        )

    def unwrapped_positions(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Continuous positions of frames ``start:stop``, starting from the stored frame ``start``."""
        s = slice(start, stop)
        return unwrap_positions(self.positions[s], self.cell[s], self.pbc)


def minimum_image(delta: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """Displacements ``delta`` (..., N, 3) reduced to the nearest image along periodic directions.

    ``cell`` is (3, 3) or one cell per leading index of ``delta`` (..., 3, 3). Exact for displacements
    shorter than half of every cell width (always true between consecutive MD frames).
    """
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    if not pbc.any():
        return delta
    cell = np.asarray(cell, dtype=np.float64)
    full = np.stack([Cell(c).complete() for c in cell.reshape(-1, 3, 3)]).reshape(cell.shape)
    frac = delta @ np.linalg.inv(full)
    frac[..., pbc] -= np.round(frac[..., pbc])
    return frac @ full


def unwrap_positions(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """(T, N, 3) positions made continuous across periodic boundaries (frame 0 unchanged).

    Each step's displacement is taken by the minimum image in the cell of the later frame.
    """
    positions = np.asarray(positions, dtype=np.float64)
    cell = np.broadcast_to(np.asarray(cell, dtype=np.float64), (positions.shape[0], 3, 3))
    if positions.shape[0] < 2:
        return positions.copy()
    steps = minimum_image(positions[1:] - positions[:-1], cell[1:], pbc)
    return np.concatenate([positions[:1], positions[:1] + np.cumsum(steps, axis=0)])
