"""An E(3)-equivariant stride predictor (FlashMD's task on an EGNN-style backbone).

Inputs: species, momenta and the pair vectors r_ij within ``cutoff``. With the free-flight displacement
u_i = τ p_i / (m_i ℓ_Z) (τ the stride, ℓ_Z a per-species length scale) every per-edge input is invariant:
a radial basis of d_ij, r̂_ij·u_i, r̂_ij·u_j, u_i·u_j; per atom the species and |u_i|². Message passing on those
gives invariant features h_i and per-edge messages m_ij; invariant heads weight the only vectors there are:

    δq_i = c_i u_i + Σ_j (a_ij r̂_ij + b_ij (u_j - u_i)),    δp_i likewise with their own weights,
    Δq_i = τ p_i / m_i + σq_Z δq_i,    p'_i = p_i + σp_Z δp_i,

so rotating (or reflecting, translating, permuting) the input does the same to the output exactly, and a
fresh model (zeroed heads) is free flight. σq_Z, σp_Z are per-species RMS values of the targets' departures
from free flight, and ℓ_Z the RMS free-flight displacement, fitted on the training pairs
(:func:`fit_stride_scales`): the loss compares targets in those units (metatrain's normalisation). Finally,
per system, total momentum is kept (p' shifted by m_i/M times the excess) and the centre of mass moves by
τ P / M (Δq shifted by the excess / M).

The stride ``timestep_fs`` and the mass of every species are part of the model: a state with other masses is
refused (:meth:`check_state`), and so is a propagator of another timestep.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from longmd.data.graph import edge_vectors
from longmd.data.trajectory import Trajectory, minimum_image
from longmd.dynamics.state import per_system_sum
from longmd.models.egnn import mlp, polynomial_envelope
from longmd.models.reference import AtomicReference
from longmd.models.stride import StridePredictor
from longmd.units import fs_to_ase_time

PRESETS: dict[str, dict[str, Any]] = {
    "small": {"hidden": 32, "n_layers": 2, "n_rbf": 16, "cutoff": 4.5},
    "medium": {"hidden": 64, "n_layers": 3, "n_rbf": 16, "cutoff": 4.5},
}
MASS_RTOL = 1e-6


class Layer(nn.Module):
    """One invariant message-passing layer; returns new features and its messages."""

    def __init__(self, hidden: int, n_edge: int) -> None:
        super().__init__()
        self.message = mlp(2 * hidden + n_edge, hidden)
        self.update = mlp(2 * hidden, hidden)

    def forward(self, h: Tensor, edge: Tensor, weight: Tensor, i: Tensor, j: Tensor) -> tuple[Tensor, Tensor]:
        m = self.message(torch.cat([h[i], h[j], edge], dim=1)) * weight[:, None]
        return h + self.update(torch.cat([h, torch.zeros_like(h).index_add(0, i, m)], dim=1)), m


class EquivariantStride(StridePredictor):
    """Predicts (Δq, p') one stride ``timestep_fs`` ahead; see the module doc.

    Args:
        species: atomic numbers it knows. masses: amu per species (same order). timestep_fs: the stride.
        hidden: feature width. n_layers: message passes. n_rbf: Gaussian radial basis functions on [0, cutoff].
        cutoff: Å. envelope_p: exponent of the polynomial cutoff envelope.
    """

    kind = "stride_egnn"

    def __init__(self, species: Sequence[int], masses: Sequence[float], timestep_fs: float, hidden: int = 32,
                 n_layers: int = 2, n_rbf: int = 16, cutoff: float = 4.5, envelope_p: int = 6) -> None:
        super().__init__()
        self.reference = AtomicReference(species)  # species table only
        if len(masses) != self.reference.n_species or min(masses) <= 0:
            raise ValueError(f"EquivariantStride: one positive mass per species {list(species)}, got {list(masses)}")
        if not timestep_fs > 0 or cutoff <= 0 or min(hidden, n_layers, n_rbf, envelope_p) < 1:
            raise ValueError("EquivariantStride: timestep_fs and cutoff must be positive; hidden, n_layers, n_rbf, "
                             "envelope_p >= 1")
        self._hp = {"species": [int(z) for z in species], "masses": [float(m) for m in masses],
                    "timestep_fs": float(timestep_fs), "hidden": int(hidden), "n_layers": int(n_layers),
                    "n_rbf": int(n_rbf), "cutoff": float(cutoff), "envelope_p": int(envelope_p)}
        self.timestep_fs, self.cutoff, self.envelope_p = float(timestep_fs), float(cutoff), int(envelope_p)
        n = self.reference.n_species
        self.register_buffer("masses", torch.tensor(masses, dtype=torch.float64))
        for name in ("length_scale", "q_scale", "p_scale"):  # fitted by fit_stride_scales
            self.register_buffer(name, torch.ones(n, dtype=torch.float64))
        self.register_buffer("rbf_centers", torch.linspace(0.0, cutoff, n_rbf, dtype=torch.float64))
        self.rbf_width = cutoff / n_rbf
        self.embedding = nn.Linear(n + 1, hidden)
        self.layers = nn.ModuleList(Layer(hidden, n_rbf + 3) for _ in range(n_layers))
        self.edge_head = nn.Linear(hidden, 4)  # a, b for δq; a, b for δp
        self.node_head = nn.Linear(hidden, 2)  # c for δq; c for δp
        for head in (self.edge_head, self.node_head):  # free flight to start with
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    @classmethod
    def build(cls, species: Sequence[int], masses: Mapping[int, float], timestep_fs: float,
              preset: str | None = None, **options: Any) -> EquivariantStride:
        """A new predictor for ``species`` with ``masses`` {Z: amu} (a preset, ``options`` overriding it)."""
        if preset is not None and preset not in PRESETS:
            raise ValueError(f"stride_egnn: unknown preset {preset!r} (available: {', '.join(PRESETS)})")
        species = sorted(int(z) for z in species)
        return cls(species, [float(masses[z]) for z in species], timestep_fs,
                   **{**PRESETS.get(preset or "small", {}), **options})

    def hyperparameters(self) -> dict[str, Any]:
        return dict(self._hp)

    def summary(self) -> str:
        hp = self._hp
        n = sum(p.numel() for p in self.parameters())
        return (f"EquivariantStride(stride {hp['timestep_fs']} fs, hidden={hp['hidden']}, layers={hp['n_layers']}, "
                f"cutoff={hp['cutoff']} Å; {n:,} parameters)")

    def target_scales(self, numbers: Tensor) -> dict[str, Tensor]:
        """(N,) per-atom units of position and momentum errors: σq_Z and σp_Z (the loss's normalisation)."""
        index = self.reference.index(numbers)
        return {"positions": self.q_scale[index], "momenta": self.p_scale[index]}

    def check_state(self, state) -> None:
        """A clear error when the state's masses are not the ones the model was trained with."""
        index = self.reference.index(state.numbers)  # unknown species raise
        expected = self.masses.to(state.masses)[index]
        bad = (state.masses - expected).abs() > MASS_RTOL * expected
        if bool(bad.any()):
            k = int(torch.nonzero(bad)[0])
            z = int(state.numbers[k])
            raise ValueError(f"the stride predictor was trained with mass {float(expected[k])} amu for Z={z}, "
                             f"the state has {float(state.masses[k])} amu (atom {k}): a learned stride is only "
                             "valid for the masses it was trained on")

    def forward(self, state, edges) -> tuple[Tensor, Tensor]:
        edge_index, shifts = edges
        i, j = edge_index[0], edge_index[1]
        dtype = state.positions.dtype
        index = self.reference.index(state.numbers)
        tau = fs_to_ase_time(self.timestep_fs)
        m = state.masses[:, None]
        flight = tau * state.momenta / m  # Å
        u = flight / self.length_scale.to(dtype)[index][:, None]
        vectors = edge_vectors(state.positions, state.cell, state.system, edge_index, shifts)
        d2 = (vectors * vectors).sum(1)
        positive = d2 > 0
        d = torch.sqrt(torch.where(positive, d2, torch.ones_like(d2)))
        weight = polynomial_envelope(d / self.cutoff, self.envelope_p) * positive
        unit = vectors / d[:, None]
        rbf = torch.exp(-(((d[:, None] - self.rbf_centers.to(dtype)) / self.rbf_width) ** 2))
        edge = torch.cat([rbf, (unit * u[i]).sum(1, keepdim=True), (unit * u[j]).sum(1, keepdim=True),
                          (u[i] * u[j]).sum(1, keepdim=True)], dim=1)
        one_hot = nn.functional.one_hot(index, self.reference.n_species).to(dtype)
        h = self.embedding(torch.cat([one_hot, (u * u).sum(1, keepdim=True)], dim=1))
        for layer in self.layers:
            h, message = layer(h, edge, weight, i, j)
        a = self.edge_head(message) * weight[:, None]  # (E, 4)
        c = self.node_head(h)  # (N, 2)
        relative = u[j] - u[i]
        out = []
        for k in range(2):  # δq, δp
            per_edge = a[:, 2 * k, None] * unit + a[:, 2 * k + 1, None] * relative
            out.append(c[:, k, None] * u + torch.zeros_like(u).index_add(0, i, per_edge))
        displacement = flight + self.q_scale.to(dtype)[index][:, None] * out[0]
        momenta = state.momenta + self.p_scale.to(dtype)[index][:, None] * out[1]
        return conserve(state, displacement, momenta, tau)


def conserve(state, displacement: Tensor, momenta: Tensor, tau: float) -> tuple[Tensor, Tensor]:
    """Per system: total momentum kept (excess removed in proportion to mass) and centre-of-mass displacement
    τ P / M (excess removed uniformly)."""
    n, system, m = state.n_systems, state.system, state.masses
    total_m = per_system_sum(m, system, n)[:, None]
    p_total = per_system_sum(state.momenta, system, n)
    momenta = momenta - m[:, None] * ((per_system_sum(momenta, system, n) - p_total) / total_m)[system]
    excess = (per_system_sum(m[:, None] * displacement, system, n) - tau * p_total) / total_m
    return displacement - excess[system], momenta


def fit_stride_scales(model: EquivariantStride, trajectories: Sequence[Trajectory],
                      pairs: Sequence[tuple[int, int]]) -> dict[str, dict[int, float]]:
    """Set ℓ_Z, σq_Z, σp_Z (per-species RMS per component of free flight, Δq - free flight, p' - p) from pairs
    (trajectory, frame) -> frame + 1 of trajectories whose timestep is the model's stride; returns them."""
    tau = fs_to_ase_time(model.timestep_fs)
    sums = {name: np.zeros(model.reference.n_species) for name in ("length", "q", "p")}
    counts = np.zeros(model.reference.n_species)
    for t, f in pairs:
        tr = trajectories[t]
        index = model.reference.index(torch.as_tensor(tr.numbers)).numpy()
        flight = tau * tr.velocities[f]
        dq = minimum_image(tr.positions[f + 1] - tr.positions[f], tr.cell[f + 1], tr.pbc)
        dp = (tr.velocities[f + 1] - tr.velocities[f]) * tr.masses[:, None]
        for name, value in (("length", flight), ("q", dq - flight), ("p", dp)):
            np.add.at(sums[name], index, (value**2).sum(1))
        np.add.at(counts, index, 3)
    fitted = {}
    for name, buffer in (("length", model.length_scale), ("q", model.q_scale), ("p", model.p_scale)):
        rms = np.sqrt(sums[name] / np.maximum(counts, 1))
        rms = np.where((counts > 0) & (rms > 0), rms, 1.0)
        buffer.copy_(torch.as_tensor(rms, dtype=buffer.dtype))
        fitted[name] = dict(zip(model.reference.species, rms.tolist(), strict=True))
    return fitted
