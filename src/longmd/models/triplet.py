"""Short-range three-body term of a decomposed potential (the inductive-bias paper's NN3):

    E_3 = sum_i sum_{j<k in N(i)} psi_{Z_i, {Z_j, Z_k}}(r_ij^2, r_ik^2, r_jk^2, cos θ_jik) u(r_ij / r_c) u(r_ik / r_c)

with one small MLP psi per centre species and unordered neighbour-species pair, N(i) the neighbours of i within
the cutoff (periodic images included: the vectors come from the graph's edges), and u the polynomial envelope
of :mod:`longmd.models.egnn`. The MLP sees (r_ij^2 / r_c^2, r_ik^2 / r_c^2, r_jk^2 / (2 r_c)^2, cos θ_jik),
with j the neighbour of the lower species (so both orders of a mixed pair give the same input); for two
neighbours of one species both orders are summed, which makes psi symmetric in j and k.

Only the two bonds at the centre are cut off: r_jk is not required to lie inside r_c. It is bounded by
r_ij + r_ik < 2 r_c and the envelopes already take the energy, and all its derivatives up to the second, to
0 when either bond reaches r_c (smooth in every input); requiring r_jk < r_c too would drop open angles
(a tetrahedral Si-C-Si with 1.9 Å bonds has r_jk = 3.1 Å > 3 Å), as Stillinger-Weber does not either.
The energy of each triplet goes to its centre atom (extensive). Output layers start at zero (see
:mod:`longmd.models.pair`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from longmd.data.graph import Graph, safe_norm
from longmd.models.egnn import polynomial_envelope
from longmd.models.pair import GroupMLPs, pair_table
from longmd.models.term import EnergyTerm


class TripletTerm(EnergyTerm):
    """Three-body energy term: O(1) per-atom energies, scaled by the Potential.

    Args:
        n_species: species of the Potential (sorted); one MLP per centre species and unordered neighbour pair.
        hidden: width of each MLP. cutoff: Å of both bonds at the centre (default 3). envelope_p: exponent.
    """

    kind = "triplet"
    scaled = True

    def __init__(self, n_species: int, hidden: int = 32, cutoff: float = 3.0, envelope_p: int = 6) -> None:
        super().__init__()
        if hidden < 1 or cutoff <= 0 or envelope_p < 1:
            raise ValueError("triplet: hidden and envelope_p must be >= 1 and cutoff > 0")
        self._hp = {"hidden": int(hidden), "cutoff": float(cutoff), "envelope_p": int(envelope_p)}
        self.cutoff = float(cutoff)
        self.n_species = n = int(n_species)
        self.register_buffer("pairs", pair_table(n), persistent=False)
        self.mlps = GroupMLPs(n * n * (n + 1) // 2, 4, int(hidden))

    @classmethod
    def build(cls, species: Sequence[int], **hyperparameters: Any) -> TripletTerm:
        return cls(len(species), **hyperparameters)

    def adds_nothing(self) -> bool:
        return self.mlps.all_zero()

    def triplet_energy(self, v_ij: Tensor, v_ik: Tensor, c: Tensor, a: Tensor, b: Tensor) -> Tensor:
        """psi u u (O(1)) of triplets with bond vectors v_ij, v_ik (M, 3) Å from centres of species index c to
        neighbours of species indices a, b; 0 when either bond reaches the cutoff."""
        r_ij, r_ik = safe_norm(v_ij), safe_norm(v_ik)
        cos = (v_ij * v_ik).sum(dim=1) / (r_ij * r_ik).clamp(min=1e-12)
        v_jk = v_ik - v_ij
        rc2 = self.cutoff * self.cutoff
        swap = a > b  # the neighbour of the lower species first
        x_ij, x_ik = (r_ij * r_ij) / rc2, (r_ik * r_ik) / rc2
        x = torch.stack([torch.where(swap, x_ik, x_ij), torch.where(swap, x_ij, x_ik),
                         (v_jk * v_jk).sum(dim=1) / (4 * rc2), cos], dim=1)
        p = self._hp["envelope_p"]
        envelope = polynomial_envelope(r_ij / self.cutoff, p) * polynomial_envelope(r_ik / self.cutoff, p)
        group = c * (self.n_species * (self.n_species + 1) // 2) + self.pairs[a, b]
        return self.mlps(x, group) * envelope

    def forward(self, graph: Graph, species_index: Tensor) -> Tensor:
        e_ij, e_ik = graph.triplet_edges()
        v = graph.edge_vectors()
        i, j, k = graph.edge_index[0, e_ij], graph.edge_index[1, e_ij], graph.edge_index[1, e_ik]
        s = species_index
        e = 0.5 * self.triplet_energy(v[e_ij], v[e_ik], s[i], s[j], s[k])  # each triplet is two ordered ones
        return torch.zeros(graph.n_atoms, dtype=v.dtype, device=v.device).index_add(0, i, e)
