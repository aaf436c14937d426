"""The interface every potential implements, and forces/stress from it by autograd.

An :class:`EnergyModel` maps a batched :class:`~longmd.data.graph.Graph` to one energy per system (eV).
Forces are ``-dE/dx`` and stress ``(1/V) dE/dε`` by autograd, so any architecture that writes ``forward``
can be simulated *and* trained through differentiable rollouts (``create_graph=True``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from longmd.data.graph import Graph
from longmd.models.reference import AtomicReference


class EnergyModel(nn.Module):
    """Base class of potentials.

    Subclasses set ``cutoff`` (Å) and implement ``forward(graph) -> (B,) energies in eV``. Edges longer
    than ``cutoff`` may be present (Verlet lists carry a skin) and must contribute nothing.
    """

    cutoff: float

    def forward(self, graph: Graph) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def hyperparameters(self) -> dict[str, Any]:
        """JSON-able constructor keyword arguments: ``type(self)(**hp)`` rebuilds the architecture."""
        raise NotImplementedError(f"{type(self).__name__} does not define hyperparameters()")

    def n_parameters(self) -> int:
        """Number of trainable parameters (buffers such as reference energies are not counted)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def _reference(self) -> AtomicReference:
        ref = getattr(self, "reference", None)
        if not isinstance(ref, AtomicReference):
            raise TypeError(f"{type(self).__name__} has no per-species reference energies / scale")
        return ref

    @property
    def has_reference(self) -> bool:
        """Whether the model carries reference energies and a scale (:class:`AtomicReference`)."""
        return isinstance(getattr(self, "reference", None), AtomicReference)

    def set_reference_energies(self, energies: Mapping[int, float]) -> None:
        """Set per-species reference energies ``{Z: eV}`` (e.g. from ``fit_reference_energies``)."""
        self._reference().set_energies(energies)

    def set_scale(self, scale: float) -> None:
        """Set the energy/force scale (e.g. the RMS of training force components, ``force_rms``)."""
        self._reference().set_scale(scale)


@dataclass
class Prediction:
    """Model outputs for a batch: energy (B,) eV, forces (N, 3) eV/Å, stress (B, 3, 3) eV/Å^3 or None."""

    energy: Tensor
    forces: Tensor
    stress: Tensor | None = None


def predict(model: nn.Module, graph: Graph, create_graph: bool = False, stress: bool = False) -> Prediction:
    """Energy, forces (= -dE/dx) and optionally stress of a batch.

    ``create_graph=True`` keeps the graph of the force computation so losses on forces (and on anything
    integrated from them) can be back-propagated to the parameters. ``stress=True`` adds the stress
    ``(1/V) dE/dε`` under homogeneous strain ε (ASE's convention; pressure = -trace/3), in eV/Å^3, NaN
    for systems without a 3D cell.
    """
    with torch.enable_grad():  # forces need autograd even when called under torch.no_grad()
        positions = graph.positions
        if not positions.requires_grad:
            positions = positions.detach().requires_grad_(True)
        inputs = [positions]
        cell = graph.cell
        if stress:
            # Homogeneous strain ε applied to positions and cell (rows are vectors: x' = x (1 + ε)).
            strain = torch.zeros_like(cell, requires_grad=True)
            sym = 0.5 * (strain + strain.transpose(1, 2))
            positions = positions + torch.einsum("ni,nij->nj", positions, sym[graph.system])
            cell = cell + torch.bmm(cell, sym)
            inputs.append(strain)
        energy = model(graph.replace(positions=positions, cell=cell))
        grads = torch.autograd.grad(
            energy.sum(), inputs, create_graph=create_graph, retain_graph=create_graph, allow_unused=True
        )
    if not create_graph:
        energy = energy.detach()
    forces = -grads[0] if grads[0] is not None else torch.zeros_like(graph.positions)
    sigma = None
    if stress:
        volume = torch.linalg.det(graph.cell.detach() if not create_graph else graph.cell).abs()
        g = grads[1] if grads[1] is not None else torch.zeros_like(graph.cell)
        # Systems without a 3D cell have no volume: their stress is NaN rather than a huge number.
        volume = torch.where(volume > 1e-12, volume, torch.full_like(volume, float("nan")))
        sigma = g / volume[:, None, None]
    return Prediction(energy=energy, forces=forces, stress=sigma)
