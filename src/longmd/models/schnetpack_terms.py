"""SchNet and PaiNN from schnetpack as energy terms of a longmd :class:`~longmd.models.potential.Potential`.

schnetpack's own representation modules (``schnetpack.representation.SchNet`` / ``PaiNN``, with its
``GaussianRBF`` radial basis and ``CosineCutoff``) and an atomwise readout MLP (``schnetpack.nn.build_mlp``)
run on longmd's batched periodic graph: schnetpack's inputs are the edge vectors ``r_ij`` of
:meth:`Graph.edge_vectors` (x_j - x_i + shifts @ cell, computed in torch, so forces and the force-parameter
derivatives Dynamic Training needs flow through the cell images) and the edge indices ``idx_i`` (centre) and
``idx_j`` (neighbour), which follow the same convention as longmd's ``edge_index``. The element embedding is
indexed by longmd's species index (0..n_species-1), so it has one row per species of the Potential.

Only the model-building subpackages of schnetpack are imported (:func:`schnetpack_modules`): its top-level
``__init__`` also imports its data and training stack (pytorch-lightning, hydra, ...), and schnetpack 2.1.1
imports a name (``T_co``) that torch >= 2.5 no longer has, so ``import schnetpack`` fails with a current
torch even though the networks themselves run unchanged.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

from torch import Tensor, nn

from longmd.data.graph import Graph
from longmd.models.term import EnergyTerm

SCHNETPACK_NEEDS = "schnetpack (pip install 'longmd[schnetpack]')"

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # "small": CPU demos and tests, a parameter count like the EGNN's small preset; "medium": 64 features.
    "schnet": {
        "small": {"n_atom_basis": 32, "n_filters": 48, "n_interactions": 3, "n_rbf": 20, "cutoff": 5.0},
        "medium": {"n_atom_basis": 64, "n_filters": 64, "n_interactions": 4, "n_rbf": 20, "cutoff": 5.0},
    },
    "painn": {
        "small": {"n_atom_basis": 32, "n_interactions": 2, "n_rbf": 20, "cutoff": 5.0},
        "medium": {"n_atom_basis": 64, "n_interactions": 3, "n_rbf": 20, "cutoff": 5.0},
    },
}


@functools.cache
def schnetpack_modules() -> SimpleNamespace:
    """schnetpack's ``representation``, ``nn`` and ``properties`` modules (ImportError naming the extra).

    When schnetpack is not imported yet, its package directory is entered without running its ``__init__``
    (see the module doc); the bare package object is removed again afterwards, so a later ``import schnetpack``
    elsewhere runs the real one, which reuses the submodules already loaded."""
    spec = importlib.util.find_spec("schnetpack")
    if spec is None:
        raise ImportError(f"schnet and painn terms need {SCHNETPACK_NEEDS}")
    names = ("schnetpack.properties", "schnetpack.nn", "schnetpack.representation")
    if "schnetpack" in sys.modules:  # the user imported it already: use that package
        return SimpleNamespace(**{n.split(".")[1]: importlib.import_module(n) for n in names})
    package = importlib.util.module_from_spec(spec)  # not executed: no __init__
    sys.modules["schnetpack"] = package
    try:
        modules = {n.split(".")[1]: importlib.import_module(n) for n in names}
    except ImportError as exc:
        raise ImportError(f"schnet and painn terms need {SCHNETPACK_NEEDS}; importing it failed: {exc}") from exc
    finally:
        if sys.modules.get("schnetpack") is package:
            del sys.modules["schnetpack"]
    return SimpleNamespace(**modules)


def _representation(cls: type[nn.Module], n_species: int, n_atom_basis: int, **kwargs: Any) -> nn.Module:
    """``cls(n_atom_basis, ...)`` whose element embedding has one row per species: schnetpack >= 2.1 takes it
    as ``nuclear_embedding``, 2.0 builds its own (rows = atomic numbers), replaced here."""
    embedding = nn.Embedding(n_species, n_atom_basis)
    if "nuclear_embedding" in inspect.signature(cls).parameters:
        return cls(n_atom_basis=n_atom_basis, nuclear_embedding=embedding, **kwargs)
    module = cls(n_atom_basis=n_atom_basis, **kwargs)
    module.embedding = embedding
    return module


class SchnetpackTerm(EnergyTerm):
    """A schnetpack representation plus an atomwise MLP readout: O(1) per-atom energies, scaled by the Potential.

    Subclasses say which representation (``_build_representation``). Shared arguments: ``n_atom_basis``
    (feature width), ``n_interactions``, ``n_rbf`` (Gaussians on [0, cutoff]), ``cutoff`` (Å, cosine cutoff),
    ``readout_layers`` (layers of schnetpack's ``build_mlp``, hidden widths halving), ``zero_readout`` (start
    the readout's last layer at zero, so the untrained term adds exactly nothing, as the EGNN's option).
    """

    scaled = True

    def __init__(self, n_species: int, n_atom_basis: int = 32, n_interactions: int = 3, n_rbf: int = 20,
                 cutoff: float = 5.0, readout_layers: int = 2, zero_readout: bool = False, **extra: Any) -> None:
        super().__init__()
        if min(n_species, n_atom_basis, n_interactions, n_rbf, readout_layers) < 1 or cutoff <= 0:
            raise ValueError(f"{self.kind}: n_atom_basis, n_interactions, n_rbf, readout_layers must be >= 1, "
                             f"cutoff > 0")
        spk = schnetpack_modules()
        self._hp = {"n_atom_basis": int(n_atom_basis), "n_interactions": int(n_interactions), "n_rbf": int(n_rbf),
                    "cutoff": float(cutoff), "readout_layers": int(readout_layers),
                    "zero_readout": bool(zero_readout), **extra}
        self.cutoff = float(cutoff)
        p = spk.properties  # schnetpack's input keys (strings; no module object on the term, which is copied)
        self._keys = (p.Z, p.Rij, p.idx_i, p.idx_j)
        radial = spk.nn.GaussianRBF(n_rbf=int(n_rbf), cutoff=float(cutoff))
        self.representation = self._build_representation(spk, int(n_species), int(n_atom_basis), int(n_interactions),
                                                         radial, spk.nn.CosineCutoff(float(cutoff)), **extra)
        self.readout = spk.nn.build_mlp(n_in=int(n_atom_basis), n_out=1, n_layers=int(readout_layers),
                                        last_zero_init=bool(zero_readout))

    def _build_representation(self, spk: SimpleNamespace, n_species: int, n_atom_basis: int, n_interactions: int,
                              radial: nn.Module, cutoff_fn: nn.Module, **extra: Any) -> nn.Module:
        raise NotImplementedError  # pragma: no cover - subclasses

    @classmethod
    def build(cls, species: Sequence[int], **hyperparameters: Any) -> SchnetpackTerm:
        return cls(len(species), **hyperparameters)

    def forward(self, graph: Graph, species_index: Tensor) -> Tensor:
        z, rij, idx_i, idx_j = self._keys
        inputs = {
            z: species_index,  # the embedding's row: the species index, not the atomic number
            rij: graph.edge_vectors(),  # x_j - x_i + S @ cell: schnetpack's R[idx_j] - R[idx_i] + offset
            idx_i: graph.edge_index[0],
            idx_j: graph.edge_index[1],
        }
        features = self.representation(inputs)["scalar_representation"]
        return self.readout(features).squeeze(-1)


class SchNetTerm(SchnetpackTerm):
    """schnetpack's SchNet (continuous-filter convolutions, shifted softplus) as a term.

    Extra argument: ``n_filters`` (filter width of the convolutions; default ``n_atom_basis``)."""

    kind = "schnet"

    def __init__(self, n_species: int, n_atom_basis: int = 32, n_interactions: int = 3, n_rbf: int = 20,
                 cutoff: float = 5.0, readout_layers: int = 2, zero_readout: bool = False,
                 n_filters: int | None = None) -> None:
        super().__init__(n_species, n_atom_basis, n_interactions, n_rbf, cutoff, readout_layers, zero_readout,
                         n_filters=int(n_filters or n_atom_basis))

    def _build_representation(self, spk, n_species, n_atom_basis, n_interactions, radial, cutoff_fn, n_filters):
        return _representation(spk.representation.SchNet, n_species, n_atom_basis, n_interactions=n_interactions,
                               radial_basis=radial, cutoff_fn=cutoff_fn, n_filters=n_filters)


class PaiNNTerm(SchnetpackTerm):
    """schnetpack's PaiNN (equivariant scalar and vector features) as a term; the energy reads its scalars."""

    kind = "painn"

    def __init__(self, n_species: int, n_atom_basis: int = 32, n_interactions: int = 3, n_rbf: int = 20,
                 cutoff: float = 5.0, readout_layers: int = 2, zero_readout: bool = False) -> None:
        super().__init__(n_species, n_atom_basis, n_interactions, n_rbf, cutoff, readout_layers, zero_readout)

    def _build_representation(self, spk, n_species, n_atom_basis, n_interactions, radial, cutoff_fn):
        return _representation(spk.representation.PaiNN, n_species, n_atom_basis, n_interactions=n_interactions,
                               radial_basis=radial, cutoff_fn=cutoff_fn)
