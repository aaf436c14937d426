"""The interface every potential implements, and forces/stress from it by autograd.

An :class:`EnergyModel` maps a batched :class:`~longmd.data.graph.Graph` to one energy per system (eV).
Forces are ``-dE/dx`` and stress ``(1/V) dE/dε`` by autograd, so any architecture that writes ``forward``
can be simulated *and* trained through differentiable rollouts (``create_graph=True``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from longmd.data.graph import Graph


class EnergyModel(nn.Module):
    """Base class of potentials.

    Subclasses set ``cutoff`` (Å) and implement ``forward(graph) -> (B,) energies in eV``. Edges longer
    than ``cutoff`` may be present (Verlet lists carry a skin) and must contribute nothing.
    """

    cutoff: float

    def forward(self, graph: Graph) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass
class Prediction:
    """Model outputs for a batch: energy (B,) eV, forces (N, 3) eV/Å, stress (B, 3, 3) eV/Å^3 or None."""

    energy: Tensor
    forces: Tensor
    stress: Tensor | None = None


def predict(model: nn.Module, graph: Graph, create_graph: bool = False, stress: bool = False) -> Prediction:
    """Energy, forces (= -dE/dx) and optionally stress of a batch.

    ``create_graph=True`` keeps the graph of the force computation so losses on forces (and on anything
    integrated from them) can be back-propagated to the parameters.
    """
    positions = graph.positions
    if not positions.requires_grad:
        positions = positions.detach().requires_grad_(True)
    inputs = [positions]
    cell = graph.cell
    if stress:
        # Homogeneous strain ε applied to positions and cell; stress = (1/V) dE/dε.
        strain = torch.zeros_like(cell, requires_grad=True)
        sym = 0.5 * (strain + strain.transpose(1, 2))
        positions = positions + torch.einsum("ni,nij->nj", positions, sym[graph.system])
        cell = cell + torch.bmm(cell, sym)
        inputs.append(strain)
    energy = model(graph.replace(positions=positions, cell=cell))
    grads = torch.autograd.grad(
        energy.sum(), inputs, create_graph=create_graph, retain_graph=create_graph, allow_unused=True
    )
    forces = -grads[0] if grads[0] is not None else torch.zeros_like(positions)
    sigma = None
    if stress:
        volume = torch.linalg.det(graph.cell).abs().clamp_min(1e-12)
        g = grads[1] if grads[1] is not None else torch.zeros_like(cell)
        sigma = g / volume[:, None, None]
    return Prediction(energy=energy, forces=forces, stress=sigma)
