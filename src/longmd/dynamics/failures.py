"""The one replica-failure check: vectorised over a batch, one host transfer per step.

Used by ``simulate`` (every step of every replica), the rollout test (training validation and ``longmd
evaluate``) and so by training. A replica fails when its state is non-finite, two atoms come closer than
``min_distance``, its temperature exceeds ``max_temperature_K`` or a force component exceeds ``max_force``;
each check is off when its limit is None.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from longmd.data.graph import edge_vectors
from longmd.dynamics.filters import ALPHA
from longmd.dynamics.neighbor_policy import VerletNeighbors
from longmd.dynamics.state import MDState
from longmd.models.committee import SPREAD

REASONS = ("ok", "nan", "min_distance", "temperature", "force", "energy_filter", "uncertainty")
"""Status of a replica; the index is the code of :func:`check_replicas` (a lower code takes precedence, except
``energy_filter``, which explains the non-finite momenta it leaves)."""


@dataclass
class Limits:
    """Failure thresholds (None: that check is off): Å, K, eV/Å."""

    min_distance: float | None = 0.5
    max_temperature_K: float | None = 5000.0
    max_force: float | None = None
    max_spread_A: float | None = None  # a committee of stride predictors: the members' spread, Å

    def message(self, code: int, stats: np.ndarray, b: int) -> str:
        """Why system b failed, from the (7, B) statistics of :func:`check_replicas`."""
        if code == 1:
            return "non-finite positions, momenta, forces or energy"
        if code == 2:
            return f"atoms {stats[1, b]:.3f} Å apart (< {self.min_distance:g} Å)"
        if code == 3:
            return f"T = {stats[4, b]:.0f} K (> {self.max_temperature_K:g} K)"
        if code == 6:
            return (f"the stride committee's spread reached {stats[6, b]:.3g} Å (> {self.max_spread_A:g} Å): the "
                    "predictors disagree, the state is probably outside their training data")
        if code == 5:
            return ("energy filter: α² < 0 (the energy error of the learned step exceeds the internal kinetic "
                    "energy, so no momentum rescaling can restore the total energy)")
        return f"a force of {stats[5, b]:.3g} eV/Å (> {self.max_force:g} eV/Å)"


def default_max_temperature(temperature_K: float | None) -> float:
    """Blow-up bound on the temperature: 10x the target, or 5000 K without one (NVE)."""
    return 10.0 * temperature_K if temperature_K else 5000.0


def per_system_any(flags: Tensor, system: Tensor, n_systems: int) -> Tensor:
    """(B,) whether any atom of each system has its flag set."""
    return torch.zeros(n_systems, dtype=torch.int32, device=flags.device).index_add(0, system, flags.int()) > 0


def finite_per_system(values: Tensor, system: Tensor, start: Tensor) -> Tensor:
    """(B,) whether ``start`` (B,) plus every row of ``values`` (N, 3) of each system is finite.

    One sum per system: a NaN or inf anywhere propagates to it (only an overflow beyond the dtype's largest
    number, itself a blow-up, would also mark a system).
    """
    return torch.isfinite(start.index_add(0, system, values.sum(-1)))


class MinDistance:
    """(B,) shortest pair distance of each system over the current neighbour list (inf: no pair).

    With ``reach`` (= threshold + skin of a Verlet list), pairs farther than ``reach`` at a list build are
    dropped until the next build: no atom moves more than skin / 2 in between, so they cannot come closer
    than the threshold. The result is then exact below the threshold and an upper bound above it, and a
    step costs a scatter over the few close pairs instead of the whole list. Cached on the build counter.
    """

    def __init__(self, neighbors: VerletNeighbors, reach: float | None = None) -> None:
        self.neighbors, self.reach = neighbors, reach
        self._build = -1
        self._pairs: tuple[Tensor, Tensor, Tensor] | None = None  # i, j, periodic offset S·cell

    def __call__(self, state: MDState) -> Tensor:
        out = torch.full((state.n_systems,), float("inf"), dtype=state.dtype, device=state.device)
        if self.neighbors.current is None:  # reset (the batch changed) and not yet rebuilt by a force call
            self.neighbors.edges(0, state)
        if self.neighbors.builds != self._build:
            self._pairs = self._close_pairs(state)
            self._build = self.neighbors.builds
        if self._pairs is None:
            return out
        i, j, offsets = self._pairs
        x = state.positions.detach()
        d2 = (x.index_select(0, j) - x.index_select(0, i) + offsets).pow(2).sum(-1)
        return out.scatter_reduce(0, state.system.index_select(0, i), d2.sqrt(), reduce="amin")

    def _close_pairs(self, state: MDState) -> tuple[Tensor, Tensor, Tensor] | None:
        edges = self.neighbors.current
        if edges is None or edges[0].shape[1] == 0:
            return None
        edge_index, shifts = edges
        offsets = edge_vectors(torch.zeros_like(state.positions), state.cell.detach(), state.system, edge_index,
                               shifts)
        i, j = edge_index
        if self.reach is not None:
            x = state.positions.detach()
            keep = (x[j] - x[i] + offsets).norm(dim=-1) <= self.reach
            i, j, offsets = i[keep], j[keep], offsets[keep]
        return i, j, offsets


def check_replicas(state: MDState, limits: Limits, d_min: Tensor | None = None,
                   com_removed: bool = True) -> np.ndarray:
    """(7, B) float64 on the host, in one transfer: code (index into :data:`REASONS`), d_min, E_pot, E_kin, T,
    largest force component, committee spread.

    Code 0: good; 1: non-finite positions, momenta, forces or energy; 2: d_min < ``min_distance``; 3: T above
    ``max_temperature_K``; 4: a force component above ``max_force``; 5: the energy filter found α² < 0 (its
    NaN momenta would read as 1); 6: a committee's spread above ``max_spread_A`` (only when nothing else failed).
    A lower code takes precedence, 5 over all. Row 6 is the spread (NaN without a committee). E_kin is the
    whole kinetic energy (E_pot + E_kin is conserved in NVE); T is that of :meth:`MDState.temperature`
    (centre-of-mass motion excluded when the total momentum is conserved). E_pot is NaN (and not checked) for a
    state without an energy (a learned-stride core), d_min inf without ``d_min``.
    """
    s = state.detach()
    n = s.n_systems
    e_kin = s.kinetic_energy()
    temperature = s.temperature(com_removed)
    nan = torch.full((n,), float("nan"), dtype=s.dtype, device=s.device)
    energy = s.energy if s.energy is not None else torch.zeros_like(e_kin)
    values = s.positions + s.momenta + (s.forces if s.forces is not None else 0.0)
    nonfinite = ~finite_per_system(values, s.system, energy)
    if d_min is None:
        d_min = torch.full_like(e_kin, float("inf"))
    f_max = (nan if s.forces is None else
             torch.zeros_like(e_kin).scatter_reduce(0, s.system, s.forces.abs().amax(-1), reduce="amax"))
    code = torch.zeros_like(e_kin)  # checks in order of rising precedence: a later one overwrites
    if limits.max_force is not None:
        code = torch.where(f_max > limits.max_force, 4.0, code)
    if limits.max_temperature_K is not None:
        code = torch.where(temperature > limits.max_temperature_K, 3.0, code)
    if limits.min_distance is not None:
        code = torch.where(d_min < limits.min_distance, 2.0, code)
    code = torch.where(nonfinite, 1.0, code)
    spread = s.per_system.get(SPREAD, nan)
    if limits.max_spread_A is not None:
        code = torch.where((spread > limits.max_spread_A) & (code == 0), 6.0, code)
    alpha = s.per_system.get(ALPHA)
    if alpha is not None:
        code = torch.where(torch.isnan(alpha), 5.0, code)
    stats = torch.stack([code, d_min, energy if s.energy is not None else nan, e_kin, temperature, f_max, spread])
    return stats.to("cpu", torch.float64).numpy()
