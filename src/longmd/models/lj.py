"""Analytic Lennard-Jones potential: tests of the MD engine, benchmarks, and a tiny trainable model.

    V(r) = 4 ε [(σ/r)^12 - (σ/r)^6]

Two truncations at ``cutoff``:

* ``r_switch=None`` (default): the energy is shifted, ``V(r) - V(cutoff)``, so it is continuous; the force
  jumps at the cutoff (tiny for the usual 2.5 σ).
* ``r_switch=r_s``: ``V(r) S(r)`` with a quintic switch S going from 1 at ``r_s`` to 0 at ``cutoff`` with
  zero first and second derivatives at both ends: energy and forces are continuous (C2), the right choice
  for energy-conservation tests.

One ε, σ for all species. With ``trainable=True`` they are ``nn.Parameter`` (gradients through rollouts).
:class:`LennardJonesTerm` is the term of a :class:`~longmd.models.potential.Potential` (unscaled eV, a physical
prior); :class:`LennardJones` the same energy as a model of its own.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from longmd.data.graph import Graph
from longmd.models.base import EnergyModel
from longmd.models.term import EnergyTerm


def quintic_switch(r: Tensor, r_on: float, r_off: float) -> Tensor:
    """1 for r <= r_on, 0 for r >= r_off, C2-smooth in between (1 - 10x^3 + 15x^4 - 6x^5)."""
    x = ((r - r_on) / (r_off - r_on)).clamp(0.0, 1.0)
    return 1.0 - x**3 * (10.0 - 15.0 * x + 6.0 * x**2)


class LennardJonesTerm(EnergyTerm):
    """Lennard-Jones energy term: per-atom energies in eV (unscaled), half of each pair on either atom.

    Args:
        epsilon: well depth ε, eV. sigma: σ, Å. cutoff: Å (default 2.5 σ).
        r_switch: start of the smooth switch (Å), or None for a shifted energy.
        trainable: make ε and σ learnable parameters.
    """

    kind = "lj"
    scaled = False

    def __init__(
        self,
        epsilon: float = 0.0104,
        sigma: float = 3.4,
        cutoff: float | None = None,
        r_switch: float | None = None,
        trainable: bool = False,
    ) -> None:
        super().__init__()
        self.cutoff = float(cutoff if cutoff is not None else 2.5 * sigma)
        if r_switch is not None and not 0.0 < r_switch < self.cutoff:
            raise ValueError(f"r_switch must lie in (0, cutoff={self.cutoff}), got {r_switch}")
        self.r_switch = None if r_switch is None else float(r_switch)
        self.trainable = bool(trainable)
        f64 = torch.float64
        self.epsilon = nn.Parameter(torch.tensor(float(epsilon), dtype=f64), requires_grad=self.trainable)
        self.sigma = nn.Parameter(torch.tensor(float(sigma), dtype=f64), requires_grad=self.trainable)

    def hyperparameters(self) -> dict:
        """Constructor arguments (JSON-serialisable); current ε, σ included."""
        return {
            "epsilon": float(self.epsilon.detach()),
            "sigma": float(self.sigma.detach()),
            "cutoff": self.cutoff,
            "r_switch": self.r_switch,
            "trainable": self.trainable,
        }

    def pair_energy(self, r: Tensor) -> Tensor:
        """Truncated pair energy (eV) at distances r (Å); exactly 0 at and beyond the cutoff."""
        eps = self.epsilon.to(r.dtype)
        sig = self.sigma.to(r.dtype)
        inside = r < self.cutoff
        r_safe = torch.where(inside, r, torch.full_like(r, self.cutoff))  # no inf/NaN in masked branch

        def lj(x: Tensor) -> Tensor:
            s6 = (sig / x) ** 6
            return 4.0 * eps * (s6 * s6 - s6)

        if self.r_switch is None:
            e = lj(r_safe) - lj(torch.full_like(r_safe, self.cutoff))
        else:
            e = lj(r_safe) * quintic_switch(r_safe, self.r_switch, self.cutoff)
        return torch.where(inside, e, torch.zeros_like(e))

    def forward(self, graph: Graph, species_index: Tensor | None = None) -> Tensor:
        r = graph.edge_vectors().norm(dim=-1)
        e_edge = 0.5 * self.pair_energy(r)  # full neighbour list: each pair appears twice
        return torch.zeros(graph.n_atoms, dtype=r.dtype, device=r.device).index_add(0, graph.edge_index[0], e_edge)


class LennardJones(EnergyModel):
    """Lennard-Jones on its own, for any species (no reference energies): the term summed per system.

    Takes :class:`LennardJonesTerm`'s arguments; ``epsilon``, ``sigma`` and ``pair_energy`` are the term's.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__()
        self.pair = LennardJonesTerm(**kwargs)
        self.cutoff = self.pair.cutoff
        self.r_switch = self.pair.r_switch

    @property
    def epsilon(self) -> nn.Parameter:
        return self.pair.epsilon

    @property
    def sigma(self) -> nn.Parameter:
        return self.pair.sigma

    def pair_energy(self, r: Tensor) -> Tensor:
        return self.pair.pair_energy(r)

    def hyperparameters(self) -> dict:
        return self.pair.hyperparameters()

    def forward(self, graph: Graph) -> Tensor:
        per_atom = self.pair(graph)
        energy = torch.zeros(graph.n_systems, dtype=per_atom.dtype, device=per_atom.device)
        return energy.index_add(0, graph.system, per_atom)
