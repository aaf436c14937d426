"""Short-range two-body term of a decomposed potential (the inductive-bias paper's NN2):

    E_2 = sum_{pairs i<j} phi_{Z_i Z_j}(r_ij),   phi_ab(r) = MLP_ab(x) * u(r / r_c),   x = r^2 / r_c^2 (or r / r_c)

with one small MLP per unordered species pair (a, b) and u the polynomial envelope of :mod:`longmd.models.egnn`
(p = 6: phi, its first and second derivatives go to 0 at r_c). Each pair's energy is split evenly between its
two atoms, so per-atom energies sum to E_2 and the term is extensive. The MLPs' output layers start at zero,
so a term not yet trained (an earlier stage of a hierarchy trains another) adds exactly nothing.

:class:`GroupMLPs` (one MLP per group of items: species pairs here, triplet types in
:mod:`longmd.models.triplet`) runs each MLP on its own items only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from longmd.data.graph import Graph, safe_norm
from longmd.models.egnn import mlp, polynomial_envelope
from longmd.models.term import EnergyTerm

INPUTS = ("r2", "r")


def pair_table(n_species: int) -> Tensor:
    """(n, n) long: the index of the unordered species pair (a, b) among n (n + 1) / 2, symmetric, row-major
    over a <= b: (0,0), (0,1), ..., (0,n-1), (1,1), ..."""
    table = torch.zeros(n_species, n_species, dtype=torch.long)
    k = 0
    for a in range(n_species):
        for b in range(a, n_species):
            table[a, b] = table[b, a] = k
            k += 1
    return table


class GroupMLPs(nn.Module):
    """``n_groups`` MLPs of ``n_in`` inputs and one output: ``forward(x, group)`` gives MLP_{group[m]}(x[m]).

    Each MLP is longmd's Linear-LayerNorm-SiLU x 2 (:func:`longmd.models.egnn.mlp`) and a Linear to one
    output, initialised to zero. Items are sorted by group and each MLP sees its own only; the group sizes are
    the one value read from the device.
    """

    def __init__(self, n_groups: int, n_in: int, hidden: int) -> None:
        super().__init__()
        self.nets = nn.ModuleList(nn.Sequential(mlp(n_in, hidden), nn.Linear(hidden, 1)) for _ in range(n_groups))
        for net in self.nets:
            nn.init.zeros_(net[-1].weight)
            nn.init.zeros_(net[-1].bias)

    def all_zero(self) -> bool:
        """Whether every MLP's output layer is zero (each outputs exactly 0)."""
        return all(not net[-1].weight.any() and not net[-1].bias.any() for net in self.nets)

    def forward(self, x: Tensor, group: Tensor) -> Tensor:
        order = torch.argsort(group, stable=True)
        sizes = torch.bincount(group, minlength=len(self.nets)).tolist()  # the host read
        chunks = torch.split(x[order], sizes)
        parts = [net(chunk).squeeze(1) for net, chunk, n in zip(self.nets, chunks, sizes, strict=True) if n]
        out = torch.cat(parts) if parts else x.new_zeros(0)
        return torch.empty_like(out).index_copy(0, order, out)


class PairTerm(EnergyTerm):
    """Two-body energy term: O(1) per-atom energies, scaled by the Potential.

    Args:
        n_species: species of the Potential (sorted); one MLP per unordered pair of them.
        hidden: width of each MLP. cutoff: Å (default 3, the paper's). envelope_p: exponent of the envelope.
        input: "r2" (the paper's r^2, as r^2 / r_c^2) or "r" (r / r_c).
    """

    kind = "pair"
    scaled = True

    def __init__(self, n_species: int, hidden: int = 32, cutoff: float = 3.0, envelope_p: int = 6,
                 input: str = "r2") -> None:
        super().__init__()
        if input not in INPUTS:
            raise ValueError(f"pair: input must be one of {INPUTS}, got {input!r}")
        if hidden < 1 or cutoff <= 0 or envelope_p < 1:
            raise ValueError("pair: hidden and envelope_p must be >= 1 and cutoff > 0")
        self._hp = {"hidden": int(hidden), "cutoff": float(cutoff), "envelope_p": int(envelope_p), "input": input}
        self.cutoff = float(cutoff)
        self.n_species = int(n_species)
        self.register_buffer("pairs", pair_table(self.n_species), persistent=False)
        self.mlps = GroupMLPs(self.n_species * (self.n_species + 1) // 2, 1, int(hidden))

    @classmethod
    def build(cls, species: Sequence[int], **hyperparameters: Any) -> PairTerm:
        return cls(len(species), **hyperparameters)

    def adds_nothing(self) -> bool:
        return self.mlps.all_zero()

    def features(self, r: Tensor) -> Tensor:
        """(M, 1) MLP input of distances r (Å)."""
        x = r / self.cutoff
        return (x * x if self._hp["input"] == "r2" else x)[:, None]

    def pair_energy(self, r: Tensor, a: Tensor, b: Tensor) -> Tensor:
        """phi_ab(r) (O(1), before the Potential's scale) of species indices a, b at distances r (Å); 0 beyond
        the cutoff."""
        envelope = polynomial_envelope(r / self.cutoff, self._hp["envelope_p"])
        return self.mlps(self.features(r), self.pairs[a, b]) * envelope

    def forward(self, graph: Graph, species_index: Tensor) -> Tensor:
        i, j = graph.edge_index[0], graph.edge_index[1]
        r = safe_norm(graph.edge_vectors())
        e_edge = 0.5 * self.pair_energy(r, species_index[i], species_index[j])  # each pair is two edges
        return torch.zeros(graph.n_atoms, dtype=r.dtype, device=r.device).index_add(0, i, e_edge)
