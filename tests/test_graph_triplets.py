"""Graph.triplets(): angle triplets of a full neighbour list, against a brute-force loop on a periodic cell."""

from __future__ import annotations

import numpy as np
import torch
from ase import Atoms

from longmd.calculator import atoms_to_graph


def periodic_graph(cutoff: float = 3.2):
    rng = np.random.default_rng(3)
    cell = np.array([[3.1, 0.0, 0.0], [0.6, 2.9, 0.0], [0.2, -0.3, 3.3]])  # small: images are neighbours
    atoms = Atoms(numbers=[1, 6, 8, 6, 1], scaled_positions=rng.random((5, 3)), cell=cell, pbc=True)
    graph, _ = atoms_to_graph(atoms, cutoff, torch.device("cpu"), torch.float64)
    perm = torch.randperm(graph.edge_index.shape[1], generator=torch.Generator().manual_seed(0))
    return graph.replace(edge_index=graph.edge_index[:, perm], shifts=graph.shifts[perm])  # edges unsorted


def test_triplets_match_brute_force_on_a_periodic_cell() -> None:
    graph = periodic_graph()
    e_ij, e_ik = graph.triplet_edges()
    edges = graph.edge_index.T.tolist()
    expected = sorted((a, b) for a in range(len(edges)) for b in range(len(edges))
                      if a != b and edges[a][0] == edges[b][0])
    assert len(expected) > 100 and sorted(zip(e_ij.tolist(), e_ik.tolist(), strict=True)) == expected
    j, i, k = graph.triplets()
    assert sorted(zip(j.tolist(), i.tolist(), k.tolist(), strict=True)) == sorted(
        (edges[a][1], edges[a][0], edges[b][1]) for a, b in expected)
    # Periodic images: some triplets join an atom to two images of the same neighbour (j == k, other shifts).
    assert bool(((j == k) & (graph.shifts[e_ij] != graph.shifts[e_ik]).any(dim=1)).any())
    v = graph.edge_vectors()
    cos = (v[e_ij] * v[e_ik]).sum(1) / (v[e_ij].norm(dim=1) * v[e_ik].norm(dim=1))
    assert bool((cos.abs() <= 1 + 1e-12).all())


def test_no_triplets_without_two_edges_per_centre() -> None:
    graph = periodic_graph()
    one = graph.replace(edge_index=graph.edge_index[:, :1], shifts=graph.shifts[:1])
    assert all(len(t) == 0 for t in one.triplets())
    none = graph.replace(edge_index=graph.edge_index[:, :0], shifts=graph.shifts[:0])
    assert all(len(t) == 0 for t in none.triplet_edges())
