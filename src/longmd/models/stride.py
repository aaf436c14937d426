"""Stride predictors: models of the propagator itself (FlashMD-style), not of the energy.

A :class:`StridePredictor` maps a state to the displacement and the new momenta of every atom one stride
``timestep_fs`` later; :class:`~longmd.dynamics.cores.LearnedStride` makes it a propagator core, so it runs
through ``simulate``, rollouts and training like a potential's velocity-Verlet core.

:class:`HarmonicStride` is the exact propagator of independent isotropic harmonic wells V = k |x - x0|^2 / 2
(x0 = the origin), with a learnable stiffness k per species: the known answer that tests every place a
predictor goes (simulate, the rollout test, a training stage). :class:`HarmonicWell` is the same physics as a
potential.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from longmd.data.graph import Graph
from longmd.models.base import EnergyModel
from longmd.models.reference import AtomicReference
from longmd.units import fs_to_ase_time


class StridePredictor(nn.Module):
    """Base class: ``forward(state, edges) -> (displacement (N, 3) Å, momenta (N, 3))`` after ``timestep_fs``,
    optionally with a third item, ``{name: (B,) tensor}`` of per-system values to keep in the state (e.g. an
    uncertainty).

    ``cutoff`` (Å) is the radius of the neighbour list it reads (``edges``), None when it needs none.
    """

    timestep_fs: float
    cutoff: float | None = None


class HarmonicStride(StridePredictor):
    """x(t) = x cos ωt + p/(mω) sin ωt, p(t) = p cos ωt - mωx sin ωt with ω = sqrt(k_Z / m); exact at any stride."""

    def __init__(self, species: Sequence[int], stiffness: float | Sequence[float], timestep_fs: float) -> None:
        super().__init__()
        self.reference = AtomicReference(species)  # species table only
        k = torch.as_tensor(stiffness, dtype=torch.float64).expand(self.reference.n_species).clone()
        if not bool((k > 0).all()) or timestep_fs <= 0:
            raise ValueError(f"HarmonicStride: stiffness and timestep_fs must be positive, got {stiffness}, "
                             f"{timestep_fs}")
        self.log_stiffness = nn.Parameter(k.log())  # eV/Å^2, positive by construction
        self.timestep_fs = float(timestep_fs)

    def hyperparameters(self) -> dict:
        return {"species": list(self.reference.species), "stiffness": list(self.stiffness().values()),
                "timestep_fs": self.timestep_fs}

    def summary(self) -> str:
        return f"HarmonicStride(stride {self.timestep_fs} fs, k = {self.stiffness()} eV/Å^2)"

    def stiffness(self) -> dict[int, float]:
        """{Z: k in eV/Å^2}."""
        return dict(zip(self.reference.species, self.log_stiffness.detach().exp().tolist(), strict=True))

    def forward(self, state, edges=None) -> tuple[Tensor, Tensor]:
        k = self.log_stiffness.exp().to(state.dtype)[self.reference.index(state.numbers)]
        omega = torch.sqrt(k / state.masses)[:, None]
        wt = omega * fs_to_ase_time(self.timestep_fs)
        m = state.masses[:, None]
        x, p = state.positions, state.momenta
        new_x = x * torch.cos(wt) + p / (m * omega) * torch.sin(wt)
        return new_x - x, p * torch.cos(wt) - m * omega * x * torch.sin(wt)


class HarmonicWell(EnergyModel):
    """V = sum_i k_Z |x_i|^2 / 2 (eV, Å): the potential whose exact propagator is :class:`HarmonicStride`."""

    cutoff = 0.0

    def __init__(self, species: Sequence[int], stiffness: float) -> None:
        super().__init__()
        self.reference_species = AtomicReference(species)
        self.stiffness = float(stiffness)

    def forward(self, graph: Graph) -> Tensor:
        self.reference_species.index(graph.numbers)  # unknown species raise
        per_atom = 0.5 * self.stiffness * (graph.positions * graph.positions).sum(-1)
        return per_atom.new_zeros(graph.n_systems).index_add(0, graph.system, per_atom)


def harmonic_period_fs(stiffness: float, mass: float) -> float:
    """2π / ω of a harmonic well, fs."""
    return 2 * math.pi / math.sqrt(stiffness / mass) / fs_to_ase_time(1.0)
