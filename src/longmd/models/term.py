"""The contract of an energy term, the summands of a :class:`~longmd.models.potential.Potential`.

A term maps a graph (already cut to its own ``cutoff`` by the Potential) and the species index of each atom
(0..n_species-1, the Potential's sorted species) to per-atom energies ``(N,)``:

* ``kind``: the registry name of the class (``egnn``, ``mace``, ``lj``), saved with the Potential;
* ``cutoff`` (Å): edges beyond it contribute nothing;
* ``scaled``: True for learned networks, whose O(1) outputs the Potential multiplies by its force scale;
  False for physical priors (Lennard-Jones, ZBL), which output eV;
* ``hyperparameters()``: JSON-able keyword arguments; ``type(term).build(species, **hp)`` rebuilds it.

Terms carry no reference energies and no scale: the Potential owns both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from longmd.data.graph import Graph


class EnergyTerm(nn.Module):
    """Base class of energy terms (see the module doc for the contract)."""

    kind: str
    cutoff: float
    scaled: bool = True

    def forward(self, graph: Graph, species_index: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def hyperparameters(self) -> dict[str, Any]:
        """A copy of the keyword arguments the term stored as ``_hp`` when built (terms that keep none override)."""
        hp = getattr(self, "_hp", None)
        if hp is None:
            raise NotImplementedError(f"{type(self).__name__} does not define hyperparameters()")
        return dict(hp)

    @classmethod
    def build(cls, species: Sequence[int], **hyperparameters: Any) -> EnergyTerm:
        """The term for a Potential of ``species`` (sorted); terms that need the species list override this."""
        return cls(**hyperparameters)

    def adds_nothing(self) -> bool:
        """True when the term's energy is exactly zero for every input (e.g. an output layer still at zero), so a
        frozen one can be skipped; terms that cannot tell answer False."""
        return False

    def summary(self) -> str:
        """One line: the hyper-parameters."""
        hp = ", ".join(f"{k}={v}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({hp})"
