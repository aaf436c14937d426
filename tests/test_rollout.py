"""The shared rollout loop: neighbour policies, batching, and the gradients of every ``gradient`` mode."""

from __future__ import annotations

import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.cluster import Icosahedron
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from conftest import integrator, md, thermalised
from longmd.data.graph import Graph
from longmd.dynamics.cores import parse_gradient
from longmd.dynamics.neighbor_policy import GivenNeighbors, RebuildNeighbors, VerletNeighbors
from longmd.dynamics.state import MDState
from longmd.models.base import EnergyModel, predict
from longmd.models.lj import LennardJones, quintic_switch
from longmd.neighbors import batched_neighbor_list


def argon_cluster(n_shells: int = 2) -> Atoms:
    atoms = Icosahedron("Ar", n_shells)
    atoms.center(vacuum=5.0)
    return atoms


def smooth_lj(**kwargs) -> LennardJones:
    return LennardJones(epsilon=0.0104, sigma=3.4, cutoff=8.5, r_switch=7.0, **kwargs)


# ------------------------------------------------------------------------------------------ neighbours
def test_verlet_lists_give_the_trajectory_of_fresh_lists_with_fewer_builds() -> None:
    state = thermalised([bulk("Ar", "fcc", a=5.26, cubic=True).repeat(2)], 250.0)
    make = integrator("nve", 5.0)
    fresh, verlet = RebuildNeighbors(8.5), VerletNeighbors(8.5, skin=0.5)
    ref = md(smooth_lj(), state, 200, make, fresh)
    out = md(smooth_lj(), state, 200, make, verlet)
    assert float((out.state.positions - ref.state.positions).abs().max()) < 1e-10
    assert float((out.state.momenta - ref.state.momenta).abs().max()) < 1e-10
    assert float((out.state.positions - state.positions).norm(dim=-1).max()) > 0.5  # moved more than the skin
    assert fresh.builds == 201 and 2 <= verlet.builds < 50, verlet.builds
    print(f"Verlet list: {verlet.builds} builds in 200 steps")


def test_verlet_list_can_isolate_nonfinite_systems() -> None:
    """With ``isolate_nonfinite`` a system with a NaN/inf coordinate gets no pairs, the others their usual
    list, at the first build and at a rebuild; without it the search refuses such positions."""
    good, broken = argon_cluster(), argon_cluster()
    broken.positions[3] = [float("nan"), 0.0, float("inf")]
    state = MDState.from_atoms([good, good])
    expected = batched_neighbor_list(state.positions, state.cell, state.pbc, state.system, 9.5)[0][:, :156]
    blown_up = MDState.from_atoms([good, broken])
    first = VerletNeighbors(8.5, 1.0, isolate_nonfinite=True)
    assert torch.equal(first.edges(0, blown_up)[0], expected) and expected.shape[1] == 13 * 12
    later = VerletNeighbors(8.5, 1.0, isolate_nonfinite=True)
    later.edges(0, state)  # a list of finite systems, then a blow-up: the displacement (NaN) forces a build
    assert torch.equal(later.edges(1, blown_up)[0], expected) and later.builds == 2
    with pytest.raises(ValueError, match="NaN"):
        VerletNeighbors(8.5, 1.0).edges(0, blown_up)


def test_given_neighbors_use_the_list_of_step_s_div_k_times_k() -> None:
    lists = [(torch.full((2, 1), s), torch.zeros(1, 3)) for s in range(10)]
    policy = GivenNeighbors(lists, update_every=3)
    assert [int(policy.edges(s, None)[0][0, 0]) for s in range(10)] == [0, 0, 0, 3, 3, 3, 6, 6, 6, 9]
    with pytest.raises(IndexError, match="step 12"):
        GivenNeighbors(lists, update_every=4).edges(13, None)


def test_given_reference_lists_reproduce_the_trajectory() -> None:
    """The DT-training path: lists of the reference trajectory's frames, one per step."""
    state = thermalised([argon_cluster()], 60.0)
    make = integrator("nve", 10.0)
    ref = md(smooth_lj(), state, 20, make, RebuildNeighbors(8.5))
    frames = [state.replace(positions=x) for x in ref.positions]
    lists = [batched_neighbor_list(s.positions, s.cell, s.pbc, s.system, 8.5) for s in frames]
    out = md(smooth_lj(), state, 20, make, GivenNeighbors(lists))
    torch.testing.assert_close(torch.stack(out.forces), torch.stack(ref.forces), rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------------------ the loop
def test_batched_replicas_equal_one_by_one() -> None:
    systems = [bulk("Ar", "fcc", a=5.26, cubic=True).repeat(2), argon_cluster(), argon_cluster(3)]
    states = [thermalised([a], 80.0, seed=k) for k, a in enumerate(systems)]
    batch = MDState.from_atoms(systems).replace(momenta=torch.cat([s.momenta for s in states]))
    make = integrator("nve", 10.0)
    together = md(smooth_lj(), batch, 30, make, VerletNeighbors(8.5, 1.0))
    alone = [md(smooth_lj(), s, 30, make, VerletNeighbors(8.5, 1.0)) for s in states]
    torch.testing.assert_close(together.state.positions, torch.cat([r.state.positions for r in alone]),
                               rtol=0, atol=1e-11)
    torch.testing.assert_close(together.energy[-1], torch.cat([r.energy[-1] for r in alone]), rtol=0, atol=1e-12)


def test_rollout_records_and_stops() -> None:
    state = thermalised([argon_cluster()], 40.0)
    make = integrator("nve", 10.0)
    seen = []

    def on_step(step: int, s: MDState) -> bool | None:
        seen.append(step)
        return False if step == 3 else None

    out = md(smooth_lj(), state, 10, make, RebuildNeighbors(8.5), on_step=on_step)
    assert seen == [0, 1, 2, 3] and out.steps_done == 3
    assert len(out.forces) == len(out.positions) == len(out.momenta) == len(out.energy) == 4
    torch.testing.assert_close(out.positions[0], state.positions)
    bare = md(smooth_lj(), state, 3, make, RebuildNeighbors(8.5), store=False)
    assert bare.forces == [] and torch.equal(bare.state.positions, out.state.positions)
    with torch.no_grad():  # validation rollouts run under no_grad: forces still come from autograd
        quiet = md(smooth_lj(), state, 3, make, RebuildNeighbors(8.5))
    torch.testing.assert_close(quiet.state.positions, out.state.positions, rtol=0, atol=0)


def test_float32_follows_float64() -> None:
    state = thermalised([argon_cluster()], 40.0)
    make = integrator("nve", 10.0)
    ref = md(smooth_lj(), state, 20, make, VerletNeighbors(8.5, 1.0))
    out = md(smooth_lj(), state.to(dtype=torch.float32), 20, make, VerletNeighbors(8.5, 1.0))
    assert out.state.positions.dtype == torch.float32
    torch.testing.assert_close(out.state.positions.double(), ref.state.positions, rtol=0, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_follows_cpu() -> None:
    state = thermalised([argon_cluster(), bulk("Ar", "fcc", a=5.26, cubic=True).repeat(2)], 40.0)
    ref = md(smooth_lj(), state, 20, integrator("svr", 10.0, 40.0), VerletNeighbors(8.5, 1.0))
    out = md(smooth_lj().cuda(), state.to("cuda"), 20, integrator("svr", 10.0, 40.0),  # CPU generator
                  VerletNeighbors(8.5, 1.0))
    assert out.state.positions.is_cuda
    assert torch.isfinite(out.state.positions).all()
    nve_ref = md(smooth_lj(), state, 20, integrator("nve", 10.0), VerletNeighbors(8.5, 1.0))
    nve = md(smooth_lj().cuda(), state.to("cuda"), 20, integrator("nve", 10.0), VerletNeighbors(8.5, 1.0))
    torch.testing.assert_close(nve.state.positions.cpu(), nve_ref.state.positions, rtol=0, atol=1e-9)
    assert ref.steps_done == out.steps_done == 20


# ------------------------------------------------------------------------------------------ gradients
class PairMLP(EnergyModel):
    """A tiny learnable pair potential (LJ plus a smooth MLP correction), float64."""

    def __init__(self) -> None:
        super().__init__()
        self.cutoff = 8.5
        self.lj = smooth_lj(trainable=True)
        self.net = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1)).double()

    def forward(self, graph: Graph) -> torch.Tensor:
        r = graph.edge_vectors().norm(dim=-1)
        e = 0.5 * self.lj.pair_energy(r)
        e = e + 0.002 * self.net(r[:, None] / 4.0).squeeze(-1) * quintic_switch(r, 6.0, self.cutoff)
        return torch.zeros(graph.n_systems, dtype=r.dtype).index_add(0, graph.system[graph.edge_index[0]], e)


N_STEPS = 6


def gradient_setup():
    """A hot 5-atom cluster, complete (all-pairs) reference lists, fixed random force weights."""
    atoms = Atoms("Ar5", positions=[[0, 0, 0], [3.8, 0, 0], [0, 3.7, 0.2], [0.1, 0.3, 3.9], [3.5, 3.4, 0.5]])
    state = thermalised([atoms], 150.0)
    lists = [batched_neighbor_list(state.positions, state.cell, state.pbc, state.system, 50.0)] * (N_STEPS + 1)
    weights = torch.randn(N_STEPS + 1, len(atoms), 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    return state, GivenNeighbors(lists), weights


def rollout_loss(model, gradient: str, step_mask=None):
    state, neighbors, weights = gradient_setup()
    out = md(model, state, N_STEPS, integrator("nve", 20.0), neighbors, gradient=gradient)
    mask = torch.ones(N_STEPS + 1, dtype=torch.float64) if step_mask is None else step_mask
    return sum(m * (w * f).sum() for m, w, f in zip(mask, weights, out.forces, strict=True)), out


def autograd_gradient(model, gradient: str, step_mask=None) -> torch.Tensor:
    loss, _ = rollout_loss(model, gradient, step_mask)
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])


def test_full_gradient_matches_finite_differences_lj() -> None:
    model = smooth_lj(trainable=True)
    grad = autograd_gradient(model, "full")
    fd = []
    for p in (model.epsilon, model.sigma):
        h = 1e-5 * float(p.detach())
        with torch.no_grad():
            p += h
            plus = float(rollout_loss(model, "none")[0])
            p -= 2 * h
            minus = float(rollout_loss(model, "none")[0])
            p += h
        fd.append((plus - minus) / (2 * h))
    torch.testing.assert_close(grad, torch.tensor(fd, dtype=torch.float64), rtol=1e-6, atol=0)
    # Gradients through the positions matter here: the per-step (detached) surrogate is clearly different.
    assert (autograd_gradient(model, "detached") - grad).abs().max() > 0.01 * grad.abs().max()


def test_full_gradient_matches_finite_differences_mlp() -> None:
    model = PairMLP()
    grad = autograd_gradient(model, "full")
    theta = parameters_to_vector(model.parameters()).detach().clone()
    direction = torch.randn(theta.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    direction = direction * theta.abs().clamp_min(0.1)  # relative steps for ε (0.01 eV) and σ (3.4 Å) alike
    h = 1e-5
    with torch.no_grad():
        vector_to_parameters(theta + h * direction, model.parameters())
        plus = float(rollout_loss(model, "none")[0])
        vector_to_parameters(theta - h * direction, model.parameters())
        minus = float(rollout_loss(model, "none")[0])
        vector_to_parameters(theta, model.parameters())
    torch.testing.assert_close(grad @ direction, torch.tensor((plus - minus) / (2 * h), dtype=torch.float64),
                               rtol=1e-6, atol=0)


def test_detached_gradient_is_the_sum_of_per_step_gradients_at_fixed_positions() -> None:
    model = PairMLP()
    grad = autograd_gradient(model, "detached")
    _, out = rollout_loss(model, "none")
    state, neighbors, weights = gradient_setup()
    params = list(model.parameters())
    total = torch.zeros_like(grad)
    for s, x in enumerate(out.positions):
        edge_index, shifts = neighbors.edges(s, state)
        graph = Graph(x.detach(), state.numbers, state.cell, state.system, edge_index, shifts)
        loss = (weights[s] * predict(model, graph, create_graph=True).forces).sum()
        total += torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])
    torch.testing.assert_close(grad, total, rtol=1e-10, atol=1e-14)


def test_truncated_gradients() -> None:
    model = PairMLP()
    full = autograd_gradient(model, "full")
    torch.testing.assert_close(autograd_gradient(model, f"truncated:{N_STEPS + 1}"), full, rtol=1e-12, atol=0)
    torch.testing.assert_close(autograd_gradient(model, "truncated:1"), autograd_gradient(model, "detached"),
                               rtol=1e-12, atol=0)
    k = 3
    # Before the first cut (steps 0..K-1) truncated:K is the full gradient ...
    early = (torch.arange(N_STEPS + 1) < k).double()
    torch.testing.assert_close(autograd_gradient(model, f"truncated:{k}", early),
                               autograd_gradient(model, "full", early), rtol=1e-12, atol=0)
    # ... at a cut (step K) the positions are fresh leaves, as in the detached mode ...
    at_cut = (torch.arange(N_STEPS + 1) == k).double()
    torch.testing.assert_close(autograd_gradient(model, f"truncated:{k}", at_cut),
                               autograd_gradient(model, "detached", at_cut), rtol=1e-12, atol=0)
    # ... and after it the error reaches back to the cut only: neither full nor detached.
    late = (torch.arange(N_STEPS + 1) > k).double()
    truncated = autograd_gradient(model, f"truncated:{k}", late)
    for other in ("full", "detached"):
        assert (truncated - autograd_gradient(model, other, late)).abs().max() > 1e-3 * truncated.abs().max()


def test_gradient_modes_keep_or_drop_the_graph() -> None:
    model = smooth_lj(trainable=True)
    state, neighbors, _ = gradient_setup()
    nve = integrator("nve", 20.0)
    none = md(model, state, 3, nve, neighbors, gradient="none")
    assert not any(t.requires_grad for t in none.forces + none.positions + none.energy)
    full = md(model, state, 3, nve, neighbors, gradient="full")
    assert all(f.requires_grad for f in full.forces) and full.positions[-1].requires_grad
    torch.testing.assert_close(full.state.positions.detach(), none.state.positions, rtol=0, atol=1e-13)
    assert parse_gradient("truncated:4") == (True, 4) and parse_gradient("detached") == (True, 1)
    for bad in ("truncated:0", "truncated:x", "partial"):
        with pytest.raises(ValueError, match="gradient"):
            parse_gradient(bad)
