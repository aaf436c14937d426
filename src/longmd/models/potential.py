"""A potential as per-species reference energies plus a sum of named energy terms.

    E = sum_i [ scale * sum_{scaled terms t} e_t,i + sum_{unscaled terms t} e_t,i + E_ref[Z_i] ]

The :class:`~longmd.models.reference.AtomicReference` holds the species table, ``E_ref`` and ``scale``; each
term (:mod:`longmd.models.term`) sees the graph cut to its own cutoff. Code outside the models (the trainer)
selects terms only by name: :meth:`Potential.parameters_of`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from longmd.data.graph import Graph
from longmd.models.base import EnergyModel
from longmd.models.reference import AtomicReference
from longmd.models.term import EnergyTerm

TERM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Potential(EnergyModel):
    """Reference energies and force scale (``reference``) plus named energy terms (``terms``), in eV."""

    def __init__(self, reference: AtomicReference, terms: Mapping[str, EnergyTerm]) -> None:
        super().__init__()
        if not terms:
            raise ValueError("Potential: needs at least one energy term")
        for name, term in terms.items():
            if not TERM_NAME.match(name):
                raise ValueError(f"Potential: term name {name!r} must be an identifier (letters, digits, _)")
            if not isinstance(term, EnergyTerm):
                raise TypeError(f"Potential: term {name!r} is a {type(term).__name__}, not an EnergyTerm")
        self.reference = reference
        self.terms = nn.ModuleDict(dict(terms))
        self.cutoff = max(float(t.cutoff) for t in self.terms.values())

    @property
    def species(self) -> list[int]:
        return list(self.reference.species)

    @property
    def term_names(self) -> list[str]:
        return list(self.terms.keys())

    def term(self, name: str) -> EnergyTerm:
        """The term called ``name`` (``KeyError`` naming the known ones otherwise)."""
        if name not in self.terms:
            raise KeyError(f"no energy term {name!r}; this potential has {self.term_names}")
        return self.terms[name]

    def parameters_of(self, names: Iterable[str]) -> list[nn.Parameter]:
        """The parameters of the named terms (to train or freeze them), in term then module order."""
        return [p for name in names for p in self.term(name).parameters()]

    def hyperparameters(self) -> dict[str, Any]:
        """``{"species": [...], "terms": [{"name", "kind", "hyperparameters"}, ...]}`` (JSON-able)."""
        return {
            "species": self.species,
            "terms": [
                {"name": n, "kind": t.kind, "hyperparameters": t.hyperparameters()} for n, t in self.terms.items()
            ],
        }

    def summary(self) -> str:
        """Species, one line per term, and the trainable parameter count."""
        head = f"Potential(species={self.species}, cutoff={self.cutoff} Å)"
        lines = [f"{head}: {self.n_parameters():,} trainable parameters"]
        for name, term in self.terms.items():
            n = sum(p.numel() for p in term.parameters() if p.requires_grad)
            total = sum(p.numel() for p in term.parameters())
            count = f"{n:,} parameters" if n or not total else f"{total:,} parameters, frozen"
            lines.append(f"  {name}: {term.summary()} [{'scaled' if term.scaled else 'eV'}], {count}")
        return "\n".join(lines)

    @staticmethod
    def _skippable(term: EnergyTerm) -> bool:
        """A frozen term that adds exactly nothing (an earlier stage of a hierarchy, whose later terms start at
        zero) costs nothing: skipped. Trainable terms always run, so their gradients exist."""
        return not any(p.requires_grad for p in term.parameters()) and term.adds_nothing()

    def forward(self, graph: Graph) -> Tensor:
        index = self.reference.index(graph.numbers)
        cut: dict[float, Graph] = {}  # terms sharing a cutoff share the cut graph
        scaled: Tensor | None = None
        unscaled: Tensor | None = None
        for term in self.terms.values():
            if self._skippable(term):
                continue
            if term.cutoff not in cut:
                cut[term.cutoff] = graph.within(term.cutoff)
            e = term(cut[term.cutoff], index)
            if term.scaled:
                scaled = e if scaled is None else scaled + e
            else:
                unscaled = e if unscaled is None else unscaled + e
        if scaled is None and unscaled is None:  # every term skipped: the reference energies alone
            scaled = torch.zeros_like(graph.positions[:, 0])
        if scaled is None:
            scaled = torch.zeros_like(unscaled)
        return self.reference(scaled, index, graph.system, graph.n_systems, unscaled=unscaled)
