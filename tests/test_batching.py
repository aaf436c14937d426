"""collate_windows: offsets, shapes, and edge vectors equal to each reference frame's own pair vectors."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import molecule

from _md_data import emt_frames, frames_to_trajectory, wrapped
from longmd.data.batching import collate_windows
from longmd.data.reference_neighbors import ReferenceNeighbors
from longmd.data.trajectory import Trajectory
from longmd.data.windows import Window, make_windows

CUTOFF = 4.0


def _molecule_trajectory(n: int = 6) -> Trajectory:
    """A non-periodic water molecule drifting and vibrating (no cell)."""
    atoms = molecule("H2O")
    t = np.arange(n)[:, None, None]
    positions = atoms.positions[None] + 0.02 * np.sin(t + np.arange(9).reshape(1, 3, 3)) + 0.05 * t
    return Trajectory(
        name="water",
        numbers=atoms.numbers,
        masses=atoms.get_masses(),
        positions=positions,
        cell=np.zeros((n, 3, 3)),
        pbc=np.zeros(3, bool),
        forces=np.ones((n, 3, 3)),
        energy=np.arange(n, dtype=float),
        velocities=np.zeros((n, 3, 3)),
        timestep_fs=0.5,
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    cu = frames_to_trajectory(wrapped(emt_frames(n_steps=8)), name="cu")
    trajs = [cu, _molecule_trajectory(), replace(cu.slice(1, 7), name="cu2")]
    nl = ReferenceNeighbors.build(trajs, CUTOFF, cache_dir=tmp_path_factory.mktemp("nl"))
    return trajs, nl


def _reference_vectors(traj: Trajectory, frame: int, nl: ReferenceNeighbors, t: int) -> np.ndarray:
    i, j, S = nl.get(t, frame)
    return traj.positions[frame][j] - traj.positions[frame][i] + S @ traj.cell[frame]


def test_batch_edges_reproduce_reference_vectors(data) -> None:
    trajs, nl = data
    windows = [Window(0, 2, 4), Window(1, 1, 4), Window(2, 0, 4), Window(0, 0, 4)]
    batch = collate_windows(trajs, windows, nl, device="cpu", dtype=torch.float64)
    sizes = [trajs[w.traj].n_atoms for w in windows]
    n = sum(sizes)
    assert batch.positions.shape == (4, n, 3) and batch.forces.shape == (4, n, 3)
    assert batch.velocities.shape == (4, n, 3) and batch.energy.shape == (4, 4)
    assert batch.cell.shape == (4, 3, 3) and batch.pbc.shape == (4, 3) and batch.pbc.dtype == torch.bool
    assert torch.equal(batch.system, torch.repeat_interleave(torch.arange(4), torch.tensor(sizes)))
    assert batch.numbers.dtype == torch.long and batch.edges[0][0].dtype == torch.long
    starts = np.concatenate([[0], np.cumsum(sizes)])
    for s in range(4):
        vectors = batch.graph(s).edge_vectors().numpy()
        edge_index = batch.edges[s][0].numpy()
        offset = 0
        for b, w in enumerate(windows):
            ref = _reference_vectors(trajs[w.traj], w.start + s, nl, w.traj)
            block = slice(offset, offset + len(ref))
            assert np.all((edge_index[:, block] >= starts[b]) & (edge_index[:, block] < starts[b + 1]))
            np.testing.assert_allclose(vectors[block], ref, atol=1e-10)
            offset += len(ref)
        assert offset == vectors.shape[0]
        # per-step energies are those of the reference frames
        np.testing.assert_array_equal(batch.energy[s].numpy(), [trajs[w.traj].energy[w.start + s] for w in windows])


def test_positions_are_continuous_inside_windows(data) -> None:
    trajs, nl = data
    cu = trajs[0]
    assert np.abs(np.diff(cu.positions, axis=0)).max() > 1.0  # the stored frames are wrapped
    batch = collate_windows(trajs, [Window(0, 0, 8)], nl, device="cpu", dtype=torch.float64)
    assert torch.diff(batch.positions, dim=0).abs().max() < 0.5
    np.testing.assert_array_equal(batch.positions[0].numpy(), cu.positions[0])


def test_single_frame_windows_float32(data) -> None:
    trajs, nl = data
    windows = make_windows(trajs, 1)[:5]
    batch = collate_windows(trajs, windows, nl, device="cpu", dtype=torch.float32)
    assert batch.n_steps == 1 and batch.n_systems == 5 and batch.positions.dtype == torch.float32
    assert batch.edges[0][1].dtype == torch.float32
    graph = batch.to(dtype=torch.float64).graph(0)
    assert graph.positions.dtype == torch.float64 and graph.n_systems == 5


def test_collate_rejects_bad_windows(data, tmp_path: Path) -> None:
    trajs, nl = data
    with pytest.raises(ValueError, match="equal length"):
        collate_windows(trajs, [Window(0, 0, 2), Window(0, 0, 3)], nl)
    with pytest.raises(IndexError):
        collate_windows(trajs, [Window(1, 4, 3)], nl)
    cell = trajs[0].cell.copy()
    cell[3] *= 1.01
    npt = [replace(trajs[0], cell=cell)]
    nl_npt = ReferenceNeighbors.build(npt, CUTOFF, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="cell"):
        collate_windows(npt, [Window(0, 2, 3)], nl_npt)
    collate_windows(npt, [Window(0, 4, 3)], nl_npt)  # constant inside this one
