"""The equivariant stride predictor: symmetry, conservation laws, the model's stride and masses, files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

from conftest import thermalised
from longmd.dynamics.cores import LearnedStride
from longmd.dynamics.neighbor_policy import RebuildNeighbors
from longmd.dynamics.propagator import build_integrator
from longmd.models.io import load_model, save_model
from longmd.models.stride_egnn import EquivariantStride
from longmd.neighbors import batched_neighbor_list

MASSES = {13: 26.98, 29: 63.55}


def predictor(seed: int = 0, **options) -> EquivariantStride:
    """A predictor with random (non-zero) output heads, float64: every term of the output is exercised."""
    torch.manual_seed(seed)
    model = EquivariantStride.build([13, 29], MASSES, timestep_fs=8.0, hidden=16, n_layers=2, **options).double()
    with torch.no_grad():
        for head in (model.edge_head, model.node_head):
            head.weight.normal_(0, 0.3)
            head.bias.normal_(0, 0.3)
        model.q_scale.fill_(0.05)
        model.p_scale.fill_(2.0)
        model.length_scale.fill_(0.3)
    return model


def alloy(seed: int = 0) -> Atoms:
    atoms = bulk("Al", "fcc", a=4.05, cubic=True).repeat((2, 2, 2))
    rng = np.random.default_rng(seed)
    atoms.symbols[rng.choice(len(atoms), 6, replace=False)] = "Cu"
    atoms.positions += rng.normal(scale=0.1, size=atoms.positions.shape)
    atoms.set_masses([MASSES[z] for z in atoms.numbers])
    return atoms


def predict(model, state):
    edges = batched_neighbor_list(state.positions, state.cell, state.pbc, state.system, model.cutoff)
    return model(state, edges)


@pytest.fixture
def state():
    return thermalised([alloy(0), alloy(1)], 900.0)


def random_rotation(seed: int, reflect: bool = False) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    q = q * torch.sign(torch.linalg.det(q))  # proper rotation
    return q @ torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)) if reflect else q


@pytest.mark.parametrize("reflect", [False, True])
def test_rotating_the_input_rotates_the_output(state, reflect):
    model = predictor()
    dq, p = predict(model, state)
    assert dq.abs().max() > 1e-3 and (p - state.momenta).abs().max() > 1e-3  # not free flight
    R = random_rotation(3, reflect)
    rotated = state.replace(positions=state.positions @ R.T, momenta=state.momenta @ R.T, cell=state.cell @ R.T)
    dq_r, p_r = predict(model, rotated)
    torch.testing.assert_close(dq_r, dq @ R.T, rtol=0, atol=1e-10)
    torch.testing.assert_close(p_r, p @ R.T, rtol=0, atol=1e-10)


def test_translation_permutation_and_periodic_images(state):
    model = predictor()
    dq, p = predict(model, state)
    cell = state.cell[state.system]
    image = torch.randint(-2, 3, (state.n_atoms, 3), dtype=torch.float64)
    moved = state.replace(positions=state.positions + torch.tensor([0.7, -1.3, 2.1], dtype=torch.float64)
                          + torch.einsum("ni,nij->nj", image, cell))
    dq_t, p_t = predict(model, moved)
    torch.testing.assert_close(dq_t, dq, rtol=0, atol=1e-10)
    torch.testing.assert_close(p_t, p, rtol=0, atol=1e-10)
    n0 = int((state.system == 0).sum())
    perm = torch.cat([torch.randperm(n0), n0 + torch.randperm(state.n_atoms - n0)])
    shuffled = state.replace(positions=state.positions[perm], momenta=state.momenta[perm],
                             masses=state.masses[perm], numbers=state.numbers[perm])
    dq_p, p_p = predict(model, shuffled)
    torch.testing.assert_close(dq_p, dq[perm], rtol=0, atol=1e-10)
    torch.testing.assert_close(p_p, p[perm], rtol=0, atol=1e-10)


def test_total_momentum_and_centre_of_mass_motion_are_exact(state):
    model = predictor()
    dq, p = predict(model, state)
    tau = 8.0 * 0.09822694788464063  # fs in ASE time units
    for b in range(state.n_systems):
        mask = state.system == b
        m = state.masses[mask][:, None]
        P = state.momenta[mask].sum(0)
        torch.testing.assert_close(p[mask].sum(0), P, rtol=0, atol=1e-10)
        com_shift = (m * dq[mask]).sum(0) / m.sum()
        torch.testing.assert_close(com_shift, tau * P / m.sum(), rtol=1e-9, atol=1e-12)


def test_batched_equals_one_by_one(state):
    model = predictor()
    dq, p = predict(model, state)
    for b in range(state.n_systems):
        dq_b, p_b = predict(model, state.select([b]))
        mask = state.system == b
        torch.testing.assert_close(dq_b, dq[mask], rtol=0, atol=1e-11)
        torch.testing.assert_close(p_b, p[mask], rtol=0, atol=1e-11)


def test_fresh_model_is_free_flight(state):
    model = EquivariantStride.build([13, 29], MASSES, timestep_fs=4.0).double()
    dq, p = predict(model, state)
    torch.testing.assert_close(dq, 4.0 * 0.09822694788464063 * state.momenta / state.masses[:, None])
    torch.testing.assert_close(p, state.momenta)


def test_masses_and_stride_are_part_of_the_model(state):
    model = predictor()
    core = LearnedStride(model, RebuildNeighbors(model.cutoff))
    with pytest.raises(ValueError, match="trained for 8.0 fs steps, not 4.0 fs"):
        build_integrator(core, 4.0)
    heavy = state.replace(masses=state.masses * 1.01)
    with pytest.raises(ValueError, match="trained with mass 26.98 amu for Z=13"):
        build_integrator(core, 8.0).init(heavy)
    build_integrator(core, 8.0).init(state)  # the right masses pass


def test_save_load_round_trip(state, tmp_path):
    model = predictor()
    path = save_model(model, tmp_path / "stride.pt")
    loaded = load_model(path).double()
    assert loaded.timestep_fs == 8.0 and loaded.hyperparameters() == model.hyperparameters()
    for a, b in zip(predict(model, state), predict(loaded, state), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
