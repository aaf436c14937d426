"""ASE calculator around any :class:`~longmd.models.base.EnergyModel` (in memory or saved to a file).

    from longmd import LongMDCalculator
    atoms.calc = LongMDCalculator("model.pt", device="cpu")

Energy, free energy (= energy), forces and, for 3D-periodic cells, stress (ASE Voigt order xx yy zz yz xz
xy, eV/Å^3, ``(1/V) dE/dε``). The neighbour list is rebuilt at every call.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from longmd.data.graph import Graph
from longmd.models.base import EnergyModel, predict
from longmd.models.inference import inference_model
from longmd.neighbors import batched_neighbor_list

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
        return dtype
    if dtype in DTYPES:
        return DTYPES[dtype]
    raise ValueError(f"dtype must be one of {sorted(DTYPES)} or a floating torch.dtype, got {dtype!r}")


def atoms_to_graph(atoms: Atoms, cutoff: float, device: torch.device, dtype: torch.dtype) -> tuple[Graph, bool]:
    """A one-system :class:`Graph` of ``atoms`` and whether its cell is 3D periodic."""
    positions = torch.tensor(atoms.get_positions(), dtype=dtype, device=device)
    numbers = torch.tensor(atoms.get_atomic_numbers(), dtype=torch.long, device=device)
    cell = torch.tensor(np.asarray(atoms.get_cell()), dtype=dtype, device=device)[None]
    pbc = torch.tensor(atoms.get_pbc(), dtype=torch.bool, device=device)[None]
    system = torch.zeros(len(atoms), dtype=torch.long, device=device)
    edge_index, shifts = batched_neighbor_list(positions, cell, pbc, system, cutoff)
    periodic = bool(atoms.pbc.all()) and atoms.cell.rank == 3
    return Graph(positions, numbers, cell, system, edge_index, shifts), periodic


class LongMDCalculator(Calculator):
    """ASE calculator for a longmd model.

    Args:
        model: an :class:`EnergyModel`, or the path of a model saved with ``longmd.models.io.save_model``.
        device: torch device. dtype: "float64" (default, for tight forces/stress) or "float32".
    The model is copied when it must change device or dtype, so the caller's model is left as it was.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(
        self,
        model: EnergyModel | str | Path,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float64",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.device = torch.device(device)
        self.dtype = _dtype(dtype)
        if isinstance(model, (str, Path)):
            from longmd.models.io import load_model

            model = load_model(model, device=self.device)
        if not isinstance(model, EnergyModel):
            raise TypeError(f"LongMDCalculator needs an EnergyModel or a model path, got {type(model).__name__}")
        self.model = inference_model(model, self.device, self.dtype)[0]

    def calculate(self, atoms: Atoms | None = None, properties=None, system_changes=all_changes) -> None:
        properties = properties or ["energy"]
        super().calculate(atoms, properties, system_changes)
        graph, periodic = atoms_to_graph(self.atoms, self.model.cutoff, self.device, self.dtype)
        if "stress" in properties and not periodic:
            raise PropertyNotImplementedError("stress needs a 3D-periodic cell (pbc all True, full-rank cell)")
        out = predict(self.model, graph, stress=periodic)
        energy = float(out.energy[0])
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": out.forces.detach().cpu().double().numpy(),
        }
        if periodic:
            sigma = out.stress[0].detach().cpu().double().numpy()
            self.results["stress"] = full_3x3_to_voigt_6_stress(sigma)
