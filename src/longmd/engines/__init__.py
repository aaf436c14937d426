"""Bridges that let other MD engines run with longmd potentials (today: LAMMPS, :mod:`longmd.engines.lammps`)."""
