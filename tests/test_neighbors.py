"""vesin neighbour lists + torch edge vectors against ASE's neighbor_list on awkward cells."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.neighborlist import neighbor_list as ase_neighbor_list

from longmd.data.graph import Graph, edge_vectors
from longmd.neighbors import batched_neighbor_list, neighbor_list

TRICLINIC = np.array([[3.1, 0.0, 0.0], [1.2, 2.8, 0.0], [0.7, -0.5, 3.3]])


def _case(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    rng = np.random.default_rng(len(name))
    if name == "triclinic":
        return rng.uniform(0, 1, (6, 3)) @ TRICLINIC, TRICLINIC, np.ones(3, bool), 4.0
    if name == "outside cell":
        return rng.uniform(-2, 3, (6, 3)) @ TRICLINIC, TRICLINIC, np.ones(3, bool), 4.0
    if name == "one atom, small cell (self-images)":
        cell = np.array([[1.6, 0.0, 0.0], [0.5, 1.5, 0.0], [0.2, 0.3, 1.8]])
        return np.array([[0.1, 0.2, 0.3]]), cell, np.ones(3, bool), 3.5
    if name == "two atoms, cell smaller than cutoff":
        return rng.uniform(0, 2, (2, 3)), np.diag([2.0, 2.2, 2.5]), np.ones(3, bool), 5.0
    if name == "non-periodic":
        return rng.uniform(0, 5, (10, 3)), np.zeros((3, 3)), np.zeros(3, bool), 3.0
    if name == "slab (pbc T T F, zero c vector)":
        cell = np.array([[2.6, 0.0, 0.0], [1.3, 2.25, 0.0], [0.0, 0.0, 0.0]])
        pos = rng.uniform(0, 1, (5, 3)) @ np.array([cell[0], cell[1], [0, 0, 6.0]])
        return pos, cell, np.array([True, True, False]), 4.0
    if name == "wire (pbc F F T)":
        cell = np.diag([8.0, 8.0, 2.4])
        return rng.uniform(0, 1, (4, 3)) * [8.0, 8.0, 2.4], cell, np.array([False, False, True]), 3.5
    raise AssertionError(name)


CASES = [
    "triclinic",
    "outside cell",
    "one atom, small cell (self-images)",
    "two atoms, cell smaller than cutoff",
    "non-periodic",
    "slab (pbc T T F, zero c vector)",
    "wire (pbc F F T)",
]


def _graph(pos, cell, i, j, S) -> Graph:
    n = len(pos)
    return Graph(
        positions=torch.tensor(pos),
        numbers=torch.ones(n, dtype=torch.long),
        cell=torch.tensor(cell)[None],
        system=torch.zeros(n, dtype=torch.long),
        edge_index=torch.tensor(np.stack([i, j])),
        shifts=torch.tensor(S, dtype=torch.float64),
    )


@pytest.mark.parametrize("name", CASES)
def test_matches_ase(name: str) -> None:
    pos, cell, pbc, cutoff = _case(name)
    i, j, S = neighbor_list(pos, cell, pbc, cutoff)
    atoms = Atoms(numbers=np.ones(len(pos), int), positions=pos, cell=cell, pbc=pbc)
    ai, aj, ad, aS = ase_neighbor_list("ijdS", atoms, cutoff)
    ours = sorted(zip(i.tolist(), j.tolist(), map(tuple, S.tolist()), strict=True))
    theirs = sorted(zip(ai.tolist(), aj.tolist(), map(tuple, aS.tolist()), strict=True))
    assert ours == theirs and len(ours) > 0
    if "self-images" in name:
        assert np.any((i == j) & np.any(S != 0, axis=1))
    d = _graph(pos, cell, i, j, S).edge_vectors().norm(dim=1).numpy()
    order = np.lexsort((aS[:, 2], aS[:, 1], aS[:, 0], aj, ai))
    np.testing.assert_allclose(d, ad[order], rtol=0, atol=1e-10)
    assert np.all(d <= cutoff + 1e-12)
    assert np.array_equal(np.lexsort((S[:, 2], S[:, 1], S[:, 0], j, i)), np.arange(len(i)))  # sorted


def test_batched_neighbor_list_offsets() -> None:
    systems = [_case(n) for n in ("triclinic", "non-periodic", "one atom, small cell (self-images)")]
    cutoff = 3.5
    positions = torch.tensor(np.concatenate([s[0] for s in systems]))
    cell = torch.tensor(np.stack([s[1] for s in systems]))
    pbc = torch.tensor(np.stack([s[2] for s in systems]))
    counts = [len(s[0]) for s in systems]
    system = torch.repeat_interleave(torch.arange(3), torch.tensor(counts))
    edge_index, shifts = batched_neighbor_list(positions, cell, pbc, system, cutoff)
    assert edge_index.dtype == torch.long and shifts.dtype == positions.dtype
    assert torch.equal(system[edge_index[0]], system[edge_index[1]])
    vectors = edge_vectors(positions, cell, system, edge_index, shifts)
    expected = []
    for pos, c, p, _ in systems:
        i, j, S = neighbor_list(pos, c, p, cutoff)
        expected.append(pos[j] - pos[i] + S @ c)
    np.testing.assert_allclose(vectors.numpy(), np.concatenate(expected), atol=1e-12)


def test_edge_vectors_double_backward() -> None:
    pos, cell, pbc, cutoff = _case("triclinic")
    i, j, S = neighbor_list(pos, cell, pbc, cutoff)
    graph = _graph(pos, cell, i, j, S)
    positions = graph.positions.clone().requires_grad_(True)
    cell_t = graph.cell.clone().requires_grad_(True)

    def energy(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        r = edge_vectors(x, c, graph.system, graph.edge_index, graph.shifts).norm(dim=1)
        return torch.exp(-r).sum()

    assert torch.autograd.gradcheck(energy, (positions, cell_t))
    assert torch.autograd.gradgradcheck(energy, (positions, cell_t))


def test_rejects_bad_input() -> None:
    pos, cell, pbc, cutoff = _case("triclinic")
    bad = pos.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        neighbor_list(bad, cell, pbc, cutoff)
    with pytest.raises(ValueError, match="zero cell vector"):
        neighbor_list(pos, np.diag([3.0, 3.0, 0.0]), True, cutoff)


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


@pytest.mark.parametrize("device", DEVICES)
def test_batched_list_is_built_on_the_device(device: str) -> None:
    """GPU rollouts search neighbours on the GPU (vesin-torch) and get the same sorted pairs as the CPU."""
    names = ("triclinic", "slab (pbc T T F, zero c vector)", "two atoms, cell smaller than cutoff")
    systems = [_case(n) for n in names]
    positions = torch.tensor(np.concatenate([s[0] for s in systems]), device=device)
    cell = torch.tensor(np.stack([s[1] for s in systems]), device=device)
    pbc = torch.tensor(np.stack([s[2] for s in systems]), device=device)
    system = torch.repeat_interleave(torch.arange(3), torch.tensor([len(s[0]) for s in systems])).to(device)
    edge_index, shifts = batched_neighbor_list(positions, cell, pbc, system, 4.0)
    assert edge_index.device == positions.device and shifts.device == positions.device
    start, expected = 0, []
    for pos, c, p, _ in systems:
        i, j, S = neighbor_list(pos, c, p, 4.0)
        expected.append(np.concatenate([np.stack([i + start, j + start]), S.T]))
        start += len(pos)
    got = torch.cat([edge_index, shifts.T.long()]).cpu().numpy()
    np.testing.assert_array_equal(got, np.concatenate(expected, axis=1))


def test_empty_and_single_atom_lists() -> None:
    i, j, S = neighbor_list(np.zeros((1, 3)), np.zeros((3, 3)), False, 3.0)
    assert i.shape == (0,) and S.shape == (0, 3)
    i, j, S = neighbor_list(np.zeros((0, 3)), np.eye(3) * 4.0, True, 3.0)
    assert i.shape == (0,) and S.shape == (0, 3)


def test_within_keeps_exactly_the_pairs_of_a_shorter_list() -> None:
    pos, cell, pbc, _ = _case("triclinic")
    long = _graph(pos, cell, *neighbor_list(pos, cell, pbc, 5.0))
    short = _graph(pos, cell, *neighbor_list(pos, cell, pbc, 4.0))
    pruned = long.within(4.0)
    assert pruned.edge_index.shape[1] == short.edge_index.shape[1] < long.edge_index.shape[1]
    assert torch.equal(pruned.edge_index, short.edge_index) and torch.equal(pruned.shifts, short.shifts)
    assert short.within(4.0) is short  # nothing to drop: the same object, no copy


def _batch(n_systems: int, seed: int = 0):
    from longmd.dynamics.state import MDState

    rng = np.random.default_rng(seed)
    systems = [Atoms("Ar8", positions=rng.uniform(0, 1, (8, 3)) @ TRICLINIC * 1.6, cell=TRICLINIC * 1.6, pbc=True)
               for _ in range(n_systems)]
    systems.append(Atoms("Ar5", positions=rng.uniform(0, 6, (5, 3))))  # a non-periodic one
    return MDState.from_atoms(systems)


def _pairs_within(edges, state, cutoff: float) -> list[tuple]:
    """The (i, j, S) of every edge shorter than ``cutoff``, in list order."""
    edge_index, shifts = edges
    d = edge_vectors(state.positions, state.cell, state.system, edge_index, shifts).norm(dim=1)
    keep = d < cutoff
    return [(int(i), int(j), *map(int, s)) for (i, j), s in zip(edge_index.T[keep], shifts[keep], strict=True)]


def test_verlet_list_rebuilds_only_the_systems_that_moved() -> None:
    """A system whose atom crossed skin / 2 is searched again, the others keep their lists; at every step the
    pairs within the cutoff are a fresh search's, in the same (i, j, S) order."""
    from longmd.dynamics.neighbor_policy import RebuildNeighbors, VerletNeighbors

    cutoff, skin = 3.0, 1.0
    state = _batch(3)
    verlet, fresh = VerletNeighbors(cutoff, skin), RebuildNeighbors(cutoff)
    verlet.edges(0, state)
    assert (verlet.builds, verlet.system_builds) == (1, 4)
    for step, (system, push) in enumerate([(1, 0.3), (1, 0.3), (0, 0.6), (3, 0.7), (2, 0.2)], start=1):
        positions = state.positions.clone()
        positions[int((state.system == system).nonzero()[0]), 0] += push  # one atom of the system, along x
        state = state.replace(positions=positions)
        edges = verlet.edges(step, state)
        assert _pairs_within(edges, state, cutoff) == _pairs_within(fresh.edges(step, state), state, cutoff)
    # 0.3 Å: no build; 0.3 more (0.6 > skin / 2): system 1 searched; 0.6: system 0; 0.7: system 3 (non-periodic);
    # 0.2: nothing
    assert (verlet.builds, verlet.system_builds) == (4, 7)


def test_verlet_list_rebuilds_a_system_whose_cell_changed_or_went_nonfinite() -> None:
    from longmd.dynamics.neighbor_policy import VerletNeighbors

    state = _batch(2)
    verlet = VerletNeighbors(3.0, 1.0, isolate_nonfinite=True)
    verlet.edges(0, state)
    cell = state.cell.clone()
    cell[1] *= 1.01
    verlet.edges(1, state.replace(cell=cell))
    assert verlet.system_builds == 3 + 1
    positions = state.positions.clone()
    positions[0, 0] = float("nan")
    edge_index, _ = verlet.edges(2, state.replace(positions=positions, cell=cell))
    assert verlet.system_builds == 3 + 2
    assert not bool((state.system[edge_index[0]] == 0).any())  # the broken system has no pairs, the others do
    assert bool((state.system[edge_index[0]] == 1).any())
