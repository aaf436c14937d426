"""Units. longmd uses ASE's unit system internally: eV, Å, amu, and ASE time (Å·sqrt(amu/eV) ≈ 10.18 fs).

User-facing times are in fs; convert at the boundary with :func:`fs_to_ase_time`.
Momenta are amu·Å/ASE-time, exactly as ``ase.Atoms.get_momenta`` stores them.
"""

from __future__ import annotations

from ase import units

FS = units.fs  # one femtosecond in ASE time units
KB_EV_PER_K = units.kB  # Boltzmann constant, eV/K


def fs_to_ase_time(t_fs: float) -> float:
    """Convert a time in femtoseconds to ASE time units."""
    return t_fs * units.fs


def ase_time_to_fs(t: float) -> float:
    """Convert a time in ASE time units to femtoseconds."""
    return t / units.fs
