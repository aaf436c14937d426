"""MACE (mace-torch) as a longmd :class:`EnergyModel`.

Two ways in, both fed longmd's batched graph directly (batched MD, ``longmd evaluate``'s rollout test and
differentiable rollouts run MACE like the EGNN, with no ASE calculator in between; forces come from
longmd's :func:`~longmd.models.base.predict`, MACE is asked for energies only):

- :class:`MACETerm` (``mace_potential(species, preset)``) is a MACE with ``mace_run_train``'s defaults as a term
  of a :class:`~longmd.models.potential.Potential` (longmd's reference energies and force scale), so
  ``longmd train`` trains it, with Dynamic Training or conventionally (a ``mace`` term), and saves it;
- ``MACEModel.from_file("mace.model")`` (or ``mace:PATH`` on the command line) wraps a model written by
  ``mace_run_train``, with its own E0s, for evaluation and simulation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from longmd.data.graph import Graph
from longmd.models.base import EnergyModel
from longmd.models.potential import Potential
from longmd.models.reference import MAX_Z, AtomicReference
from longmd.models.term import EnergyTerm

PREFIX = "mace:"
PRESETS = {"small": {"channels": 16}, "medium": {"channels": 64}, "large": {"channels": 128}}


def _mace_module(species: list[int], channels: int, max_L: int, r_max: float, avg_num_neighbors: float,
                 num_interactions: int, correlation: int, max_ell: int) -> nn.Module:
    """ScaleShiftMACE with mace_run_train's defaults (8 Bessel functions, radial MLP [64, 64, 64], readout
    16x0e, residual interaction blocks), hidden irreps ``{channels}x0e + {channels}x1o`` for max_L = 1,
    zero E0s, scale 1, shift 0 (longmd's :class:`AtomicReference` supplies both)."""
    # mace before e3nn: importing mace is what lets torch's weights-only load read e3nn's constants.pt
    import mace  # noqa: F401
    import numpy as np
    from e3nn import o3
    from mace import modules

    irreps = " + ".join(f"{channels}x{ell}{'e' if ell % 2 == 0 else 'o'}" for ell in range(max_L + 1))
    block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    return modules.ScaleShiftMACE(
        r_max=r_max, num_bessel=8, num_polynomial_cutoff=5, max_ell=max_ell, interaction_cls=block,
        interaction_cls_first=block, num_interactions=num_interactions, num_elements=len(species),
        hidden_irreps=o3.Irreps(irreps), MLP_irreps=o3.Irreps("16x0e"), atomic_energies=np.zeros(len(species)),
        avg_num_neighbors=avg_num_neighbors, atomic_numbers=species, correlation=correlation,
        gate=torch.nn.functional.silu, radial_MLP=[64, 64, 64], atomic_inter_scale=1.0, atomic_inter_shift=0.0,
    )


def _mace_inputs(graph: Graph, index: Tensor, n_species: int) -> dict[str, Tensor]:
    """MACE's input dict of a longmd graph (species ``index`` 0..n_species-1)."""
    counts = torch.bincount(graph.system, minlength=graph.n_systems)
    return {
        "positions": graph.positions,
        "node_attrs": nn.functional.one_hot(index, n_species).to(graph.positions.dtype),
        "edge_index": graph.edge_index,
        # MACE's edge vector is x[receiver] - x[sender] + shifts, longmd's x_j - x_i + S @ cell: the same.
        "shifts": torch.einsum("ek,ekl->el", graph.shifts, graph.cell[graph.system[graph.edge_index[0]]]),
        "unit_shifts": graph.shifts,
        "cell": graph.cell.reshape(-1, 3),
        "batch": graph.system,
        "ptr": torch.cat([counts.new_zeros(1), counts.cumsum(0)]),
    }


class MACETerm(EnergyTerm):
    """A MACE network built by longmd as a term: per-atom energies (E0s zero, scaled by the Potential)."""

    kind = "mace"
    scaled = True

    def __init__(self, species: list[int], channels: int = 32, max_L: int = 1, r_max: float = 5.0,
                 avg_num_neighbors: float = 20.0, num_interactions: int = 2, correlation: int = 3,
                 max_ell: int = 3, zero_readout: bool = False) -> None:
        super().__init__()
        self.n_species = len(species)
        self._hp = {"channels": int(channels), "max_L": int(max_L), "r_max": float(r_max),
                    "avg_num_neighbors": float(avg_num_neighbors), "num_interactions": int(num_interactions),
                    "correlation": int(correlation), "max_ell": int(max_ell)}
        self.module = _mace_module(sorted(int(z) for z in species), **self._hp)
        self._hp["zero_readout"] = bool(zero_readout)
        if zero_readout:  # every readout's last linear layer at zero: the term adds exactly nothing until trained
            with torch.no_grad():
                for layer in self._last_readout_layers():
                    layer.weight.zero_()
        self.cutoff = float(r_max)

    def _last_readout_layers(self) -> list[nn.Module]:
        """The last linear layer of each of MACE's readouts (``linear`` or ``linear_2``), whose outputs sum to the
        node energy."""
        return [getattr(r, "linear_2", None) or r.linear for r in self.module.readouts]

    def adds_nothing(self) -> bool:
        return all(not layer.weight.any() for layer in self._last_readout_layers())

    @classmethod
    def build(cls, species: list[int], **hyperparameters: Any) -> MACETerm:
        return cls(list(species), **hyperparameters)

    def forward(self, graph: Graph, species_index: Tensor) -> Tensor:
        data = _mace_inputs(graph, species_index, self.n_species)
        out = self.module(data, training=self.training, compute_force=False)
        return out["node_energy"].to(graph.positions.dtype)


def mace_potential(species: list[int], preset: str | None = None, **hyperparameters: Any) -> Potential:
    """A :class:`Potential` with one ``"mace"`` term: ``small`` (16 channels), ``medium`` (64) or ``large``
    (128, mace_run_train's default size), any keyword overridden; :class:`MACETerm`'s defaults without a preset."""
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"MACE: unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    reference = AtomicReference(sorted(int(z) for z in species))
    hp = {**(PRESETS[preset] if preset else {}), **hyperparameters}
    return Potential(reference, {"mace": MACETerm.build(reference.species, **hp)})


class MACEModel(EnergyModel):
    """A model written by ``mace_run_train`` on longmd's graph, energies including its own E0s."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        for name in ("r_max", "atomic_numbers"):
            if not hasattr(module, name):
                raise TypeError(f"{type(module).__name__} is not a MACE model (no {name!r})")
        self.module = module
        self.cutoff = float(module.r_max)
        self.species = [int(z) for z in module.atomic_numbers]
        index = torch.full((MAX_Z + 1,), -1, dtype=torch.long)
        index[self.species] = torch.arange(len(self.species))
        self.register_buffer("species_index", index, persistent=False)
        self._checked: Tensor | None = None  # last `numbers` validated (as AtomicReference.index does)

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
        raise NotImplementedError("a mace_run_train model stays in MACE's own file format")

    def _species_index(self, numbers: Tensor) -> Tensor:
        """Species index of each atom. Unknown elements raise; the check reads the device once per ``numbers``
        tensor (an MD run passes the same one every step), not once per call."""
        index = self.species_index[numbers]
        if numbers is not self._checked:
            if bool((index < 0).any()):
                unknown = sorted({int(z) for z in numbers[index < 0].tolist()})
                raise ValueError(f"MACE model knows elements {self.species}, not {unknown}")
            self._checked = numbers
        return index

    def forward(self, graph: Graph) -> Tensor:
        graph = graph.within(self.cutoff)  # MACE would run its tensor products on a Verlet list's skin too
        data = _mace_inputs(graph, self._species_index(graph.numbers), len(self.species))
        return self.module(data, training=self.training, compute_force=False)["energy"]


def build_mace(species: list[int], channels: int = 64, max_L: int = 1, r_max: float = 5.0,
               seed: int = 0) -> Potential:
    """A seeded MACE :class:`Potential` (random weights: for speed benchmarks and tests, not accuracy)."""
    torch.manual_seed(seed)
    return mace_potential(species, channels=channels, max_L=max_L, r_max=r_max)


def load_mace(spec: str, device: str | torch.device = "cpu") -> MACEModel:
    """``mace:PATH`` -> :class:`MACEModel` on ``device``."""
    return MACEModel.from_file(spec.removeprefix(PREFIX), device=device)
