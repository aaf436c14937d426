"""Reading trajectories from files (ASE formats) with validation."""

from longmd.io.read import DataError, finite_difference_velocities, read_trajectories

__all__ = ["DataError", "finite_difference_velocities", "read_trajectories"]
