"""Pairwise forces of a potential: F_i = sum_j F_ij, binned by species pair and distance (the inductive-bias
paper's Fig. 2a/3a).

A longmd potential sees positions only through the edge vectors v_e = x_j - x_i + S_e @ cell of its graph, so
with g_e = dE/dv_e (autograd, through a perturbation of the edge's cell shift)

    F_i = sum_{pairs (i, j, S)} F_ij,   F_ij = g_(i->j) - g_(j->i)   (the force on i due to j; F_ji = -F_ij)

exactly. For a distance-based potential (pair terms, EGNN: E depends on the edge lengths d_e only) g_e =
(dE/dd_e) v_e / d_e, so F_ij lies along the bond and its radial component is

    f_ij = F_ij . (x_i - x_j) / d = -(dE/dd_(i->j) + dE/dd_(j->i))   (eV/Å; > 0 repulsive, < 0 attractive),

which for a pair potential phi is -dphi/dr. Angle-dependent terms (the triplet term) add a part of F_ij
across the bond; its mean size is reported beside the radial component, so it is never hidden.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from ase.geometry import complete_cell
from torch import nn

from longmd.data.graph import Graph


@dataclass
class PairForces:
    """One row per atom pair (each pair once, periodic images apart): the atoms ``i < j`` (or i == j for an
    atom and its own image), species ``z_i <= z_j`` order not implied, distance ``r`` (Å), radial component
    ``radial`` (eV/Å, > 0 repulsive), size of the part across the bond ``across`` (eV/Å) and the vector ``F_ij``
    (force on i due to j, eV/Å); ``forces``: the model's own forces of the graph's atoms, ``(N, 3)``."""

    i: np.ndarray
    j: np.ndarray
    z_i: np.ndarray
    z_j: np.ndarray
    r: np.ndarray
    radial: np.ndarray
    across: np.ndarray
    vector: np.ndarray
    forces: np.ndarray

    def summed(self, n_atoms: int) -> np.ndarray:
        """sum_j F_ij of every atom, (N, 3): equals ``forces`` for a model of edge vectors only."""
        out = np.zeros((n_atoms, 3))
        np.add.at(out, self.i, self.vector)
        np.add.at(out, self.j, -self.vector)
        return out


def _invertible(cell: torch.Tensor) -> torch.Tensor:
    """The cells with missing (zero) vectors completed orthogonally (ASE's ``complete_cell``): their shifts along
    those directions are zero, so the edge vectors do not change, and the cells can be inverted."""
    return torch.stack([torch.as_tensor(complete_cell(c.detach().cpu().numpy()), dtype=cell.dtype) for c in cell]
                       ).to(cell.device)


def pair_forces(model: nn.Module, graph: Graph) -> PairForces:
    """The pairwise forces of ``model`` on ``graph`` (a full neighbour list at least as long as its cutoff)."""
    cell = _invertible(graph.cell)
    shifts = graph.shifts.detach().clone().requires_grad_(True)
    positions = graph.positions.detach().requires_grad_(True)
    with torch.enable_grad():
        energy = model(graph.replace(positions=positions, cell=cell, shifts=shifts)).sum()
        g_shift, g_pos = torch.autograd.grad(energy, [shifts, positions], allow_unused=True)
    if g_shift is None:
        raise ValueError("pair forces need a model that computes its energy from the graph's edge vectors")
    i, j = graph.edge_index
    system = graph.system[i]
    g = torch.einsum("ek,elk->el", g_shift, torch.linalg.inv(cell)[system])  # dE/dv_e = dE/dS_e @ cell^-T
    v = (positions[j] - positions[i] + torch.einsum("ek,ekl->el", graph.shifts, cell[system])).detach()
    g, v = g.detach().double().cpu().numpy(), v.double().cpu().numpy()
    i, j, s = i.cpu().numpy(), j.cpu().numpy(), graph.shifts.detach().cpu().numpy().round().astype(np.int64)
    # Each pair is two edges, (i, j, S) and (j, i, -S); the canonical one runs from the lower index (an atom and
    # its own image: the one whose first non-zero shift is positive).
    first = np.take_along_axis(s, np.argmax(s != 0, axis=1)[:, None], axis=1)[:, 0]
    canonical = (i < j) | ((i == j) & (first > 0))
    lo, hi = np.where(canonical, i, j), np.where(canonical, j, i)
    key = np.column_stack([lo, hi, np.where(canonical[:, None], s, -s)])
    _, group = np.unique(key, axis=0, return_inverse=True)
    group = group.reshape(-1)
    n = int(group.max()) + 1 if len(group) else 0
    if np.bincount(group, minlength=n).min(initial=2) != 2:
        raise ValueError("pair forces need a full neighbour list (both edges of every pair)")
    vector = np.zeros((n, 3))
    np.add.at(vector, group, np.where(canonical[:, None], g, -g))  # F_lo,hi = g_(lo->hi) - g_(hi->lo)
    bond = np.zeros((n, 3))
    np.add.at(bond, group[canonical], v[canonical])  # x_hi - x_lo (+ images)
    r = np.linalg.norm(bond, axis=1)
    unit = bond / np.where(r > 0, r, 1.0)[:, None]
    radial = -(vector * unit).sum(axis=1)
    across = np.linalg.norm(vector + radial[:, None] * unit, axis=1)
    pair_lo, pair_hi = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    pair_lo[group], pair_hi[group] = lo, hi
    numbers = graph.numbers.cpu().numpy()
    forces = -g_pos.detach().double().cpu().numpy() if g_pos is not None else np.zeros((graph.n_atoms, 3))
    return PairForces(pair_lo, pair_hi, numbers[pair_lo], numbers[pair_hi], r, radial, across, vector, forces)


def bin_pair_forces(parts: Iterable[PairForces], r_max: float, width: float = 0.05) -> list[dict]:
    """Rows ``{pair, r_lo_A, r_hi_A, r_A, count, mean_eV_per_A, std_eV_per_A, across_eV_per_A}`` of the radial
    pair force per species pair (symbols, e.g. "C-Si") and distance bin of ``width`` Å up to ``r_max``; empty
    bins are left out."""
    from ase.data import chemical_symbols

    edges = np.arange(0.0, r_max + width, width)
    pools: dict[tuple[int, int], list[np.ndarray]] = {}
    for p in parts:
        a, b = np.minimum(p.z_i, p.z_j), np.maximum(p.z_i, p.z_j)
        for pair in set(zip(a.tolist(), b.tolist(), strict=True)):
            mask = (a == pair[0]) & (b == pair[1])
            pools.setdefault(pair, []).append(np.column_stack([p.r[mask], p.radial[mask], p.across[mask]]))
    rows = []
    for (a, b), chunks in sorted(pools.items()):
        data = np.concatenate(chunks)
        index = np.digitize(data[:, 0], edges) - 1
        for k in range(len(edges) - 1):
            values = data[index == k]
            if len(values):
                rows.append({"pair": f"{chemical_symbols[a]}-{chemical_symbols[b]}", "r_lo_A": edges[k],
                             "r_hi_A": edges[k + 1], "r_A": float(values[:, 0].mean()), "count": len(values),
                             "mean_eV_per_A": float(values[:, 1].mean()), "std_eV_per_A": float(values[:, 1].std()),
                             "across_eV_per_A": float(values[:, 2].mean())})
    return rows


def plot_pair_forces(rows: list[dict], path, title: str = "") -> None:
    """Mean radial pair force against distance per species pair, with a band of one standard deviation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for pair in dict.fromkeys(row["pair"] for row in rows):
        mine = [row for row in rows if row["pair"] == pair and row["count"] >= 3]
        if not mine:
            continue
        r, mean, std = (np.array([row[key] for row in mine]) for key in ("r_A", "mean_eV_per_A", "std_eV_per_A"))
        gap = np.diff([row["r_lo_A"] for row in mine]) > 1.5 * (mine[0]["r_hi_A"] - mine[0]["r_lo_A"])
        breaks = np.flatnonzero(gap) + 1  # no line across distances without pairs
        r, mean, std = (np.insert(x, breaks, np.nan) for x in (r, mean, std))
        (line,) = ax.plot(r, mean, marker="o", markersize=2, label=pair)
        ax.fill_between(r, mean - std, mean + std, color=line.get_color(), alpha=0.25, linewidth=0)
    ax.axhline(0.0, color="0.5", linewidth=0.8)
    ax.set_xlabel("r (Å)")
    ax.set_ylabel("pair force F_ij · r̂ (eV/Å; > 0 repulsive)")
    ax.set_title(title or "pairwise forces (mean ± std; bins with ≥ 3 pairs)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
