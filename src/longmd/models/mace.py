"""MACE (mace-torch) as a longmd :class:`EnergyModel`.

A MACE network trained with ``mace_run_train`` is loaded as the torch module it is saved as, and fed
longmd's batched graph directly: batched MD, ``longmd evaluate``'s rollout test and differentiable
rollouts all run it like the EGNN, with no ASE calculator in between. Forces come from longmd's
:func:`~longmd.models.base.predict` (MACE is asked for energies only), so both models are compared on the
same integrator, neighbour lists and autograd path.

    model = MACEModel.from_file("mace.model", device="cuda")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from longmd.data.graph import Graph
from longmd.models.base import EnergyModel

PREFIX = "mace:"


class MACEModel(EnergyModel):
    """Wraps a ``mace.modules`` MACE / ScaleShiftMACE module; energies include its E0s (eV)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        for name in ("r_max", "atomic_numbers"):
            if not hasattr(module, name):
                raise TypeError(f"{type(module).__name__} is not a MACE model (no {name!r})")
        self.module = module
        self.cutoff = float(module.r_max)
        numbers = [int(z) for z in module.atomic_numbers]
        index = torch.full((max(numbers) + 1,), -1, dtype=torch.long)
        index[numbers] = torch.arange(len(numbers))
        self.register_buffer("species_index", index, persistent=False)
        self.species = numbers

    @classmethod
    def from_file(cls, path: str | Path, device: str | torch.device = "cpu") -> MACEModel:
        """Load a model saved by ``mace_run_train`` (a pickled module: only open files you trust)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"MACE model file not found: {path}")
        try:
            module = torch.load(path, map_location=device, weights_only=False)
        except Exception as exc:
            raise ValueError(f"{path}: cannot load as a MACE model ({exc}); is mace-torch installed?") from exc
        return cls(module).to(device).eval()

    def hyperparameters(self) -> dict[str, Any]:
        raise NotImplementedError("MACE models are saved in MACE's own format (torch.save of the module)")

    def forward(self, graph: Graph) -> Tensor:
        numbers = graph.numbers
        known = numbers < len(self.species_index)
        index = torch.where(known, self.species_index[numbers.clamp(max=len(self.species_index) - 1)], -1)
        if bool((index < 0).any()):
            unknown = sorted({int(z) for z in numbers[index < 0]})
            raise ValueError(f"MACE model knows elements {self.species}, not {unknown}")
        dtype = graph.positions.dtype
        n_systems = graph.cell.shape[0]
        sender = graph.edge_index[0]
        counts = torch.bincount(graph.system, minlength=n_systems)
        data = {
            "positions": graph.positions,
            "node_attrs": nn.functional.one_hot(index, len(self.species)).to(dtype),
            "edge_index": graph.edge_index,
            # MACE's edge vector is x[receiver] - x[sender] + shifts, longmd's x_j - x_i + S @ cell: the same.
            "shifts": torch.einsum("ek,ekl->el", graph.shifts, graph.cell[graph.system[sender]]),
            "unit_shifts": graph.shifts,
            "cell": graph.cell.reshape(-1, 3),
            "batch": graph.system,
            "ptr": torch.cat([counts.new_zeros(1), counts.cumsum(0)]),
        }
        return self.module(data, training=self.training, compute_force=False)["energy"]


def build_mace(species: list[int], channels: int = 64, max_L: int = 1, r_max: float = 5.0,
               avg_num_neighbors: float = 20.0, seed: int = 0) -> MACEModel:
    """A MACE with ``mace_run_train``'s defaults (2 interactions, correlation 3, max_ell 3, 8 Bessel functions,
    radial MLP [64, 64, 64], readout 16x0e, residual interaction blocks) and hidden irreps
    ``{channels}x0e + {channels}x1o`` (max_L = 1). Weights are random: for speed and tests, not accuracy."""
    import numpy as np
    from e3nn import o3
    from mace import modules

    irreps = " + ".join(f"{channels}x{ell}{'e' if ell % 2 == 0 else 'o'}" for ell in range(max_L + 1))
    block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    torch.manual_seed(seed)
    module = modules.ScaleShiftMACE(
        r_max=r_max, num_bessel=8, num_polynomial_cutoff=5, max_ell=3, interaction_cls=block,
        interaction_cls_first=block, num_interactions=2, num_elements=len(species), hidden_irreps=o3.Irreps(irreps),
        MLP_irreps=o3.Irreps("16x0e"), atomic_energies=np.zeros(len(species)), avg_num_neighbors=avg_num_neighbors,
        atomic_numbers=sorted(species), correlation=3, gate=torch.nn.functional.silu, radial_MLP=[64, 64, 64],
        atomic_inter_scale=1.0, atomic_inter_shift=0.0,
    )
    return MACEModel(module)


def load_mace(spec: str, device: str | torch.device = "cpu") -> MACEModel:
    """``mace:PATH`` -> :class:`MACEModel` on ``device``."""
    return MACEModel.from_file(spec.removeprefix(PREFIX), device=device)
