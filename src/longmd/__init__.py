"""longmd: machine-learning potentials that stay accurate and stable over long molecular dynamics."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["LearnedDynamics", "LongMDCalculator", "__version__"]


def __getattr__(name: str):
    # Lazy import keeps `import longmd` cheap and free of the calculator's ASE imports.
    if name == "LongMDCalculator":
        from longmd.calculator import LongMDCalculator

        return LongMDCalculator
    if name == "LearnedDynamics":
        from longmd.dynamics.ase_dynamics import LearnedDynamics

        return LearnedDynamics
    raise AttributeError(f"module 'longmd' has no attribute {name!r}")
