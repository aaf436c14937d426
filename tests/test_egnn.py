"""EGNN: parameter count, forces = -dE/dx, invariances, batching, cutoff behaviour, reference energies."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import make_supercell

from longmd.data.graph import Graph
from longmd.models.base import predict
from longmd.models.egnn import PRESETS, egnn_potential, polynomial_envelope
from longmd.models.potential import Potential
from longmd.models.reference import fit_reference_energies, force_rms, init_reference
from longmd.neighbors import batched_neighbor_list

F64 = torch.float64
SPECIES = [1, 6, 8]
CUTOFF = 3.0


def graph_of(atoms_list: list[Atoms], cutoff: float = CUTOFF, dtype: torch.dtype = F64) -> Graph:
    """Batch ASE Atoms into one Graph with a full neighbour list of radius ``cutoff``."""
    positions = torch.tensor(np.concatenate([a.positions for a in atoms_list]), dtype=dtype)
    numbers = torch.tensor(np.concatenate([a.numbers for a in atoms_list]), dtype=torch.long)
    cell = torch.tensor(np.stack([np.asarray(a.cell) for a in atoms_list]), dtype=dtype)
    pbc = torch.tensor(np.stack([a.pbc for a in atoms_list]))
    system = torch.repeat_interleave(torch.arange(len(atoms_list)), torch.tensor([len(a) for a in atoms_list]))
    edge_index, shifts = batched_neighbor_list(positions, cell, pbc, system, cutoff)
    return Graph(positions, numbers, cell, system, edge_index, shifts)


def tiny_model(envelope: str = "polynomial", **kw) -> Potential:
    model = egnn_potential(SPECIES, hidden=8, n_rff=6, n_layers=2, cutoff=CUTOFF, envelope=envelope, **kw).double()
    model.set_reference_energies({1: -1.5, 6: -7.25, 8: -4.0})
    model.set_scale(0.7)
    return model


def random_periodic(n: int = 6, seed: int = 1) -> Atoms:
    rng = np.random.default_rng(seed)
    cell = np.array([[4.0, 0.0, 0.0], [0.7, 3.6, 0.0], [0.3, -0.4, 3.9]])
    return Atoms(numbers=rng.choice(SPECIES, n), scaled_positions=rng.random((n, 3)), cell=cell, pbc=True)


def random_molecule(n: int = 5, seed: int = 2) -> Atoms:
    rng = np.random.default_rng(seed)
    return Atoms(numbers=rng.choice(SPECIES, n), positions=rng.random((n, 3)) * 2.5)


def energy(model: Potential, atoms_list: list[Atoms], cutoff: float = CUTOFF) -> np.ndarray:
    return predict(model, graph_of(atoms_list, cutoff)).energy.numpy()


def test_paper_configuration_has_513281_parameters() -> None:
    model = egnn_potential([1, 6, 46], preset="paper")
    assert model.n_parameters() == 513_281
    assert "513,281" in model.summary()
    hp = model.term("egnn").hyperparameters()
    assert (hp["hidden"], 2 * hp["n_rff"], hp["rff_sigma"], hp["n_layers"], hp["cutoff"]) == (128, 512, 4.0, 3, 5.0)
    # Reference energies, scale and Fourier frequencies are buffers, not parameters.
    assert not any("reference" in k or "rff" in k for k, _ in model.named_parameters())


def test_presets_overrides_and_hyperparameters_round_trip() -> None:
    small = egnn_potential([8, 1], preset="small", n_layers=3)
    assert small.term("egnn").hyperparameters()["n_layers"] == 3 and small.species == [1, 8]
    assert set(PRESETS) >= {"paper", "small"}
    hp = json.loads(json.dumps(small.term("egnn").hyperparameters()))
    assert egnn_potential(small.species, **hp).n_parameters() == small.n_parameters()
    with pytest.raises(ValueError, match="unknown preset"):
        egnn_potential([1], preset="huge")
    with pytest.raises(ValueError, match="envelope"):
        egnn_potential([1], envelope="cosine")


def test_fourier_frequencies_are_seeded() -> None:
    a, b, c = (egnn_potential([1], n_rff=4, seed=s).term("egnn") for s in (3, 3, 4))
    fa, fb, fc = (m.layers[0].rff_frequencies for m in (a, b, c))
    assert torch.equal(fa, fb) and not torch.equal(fa, fc)
    assert not torch.equal(a.layers[0].rff_frequencies, a.layers[1].rff_frequencies)  # one matrix per layer


@pytest.mark.parametrize("atoms", [random_periodic(), random_molecule()], ids=["periodic", "molecule"])
def test_forces_are_minus_gradient_by_finite_differences(atoms: Atoms) -> None:
    model = tiny_model()
    forces = predict(model, graph_of([atoms])).forces.numpy()
    h = 1e-5
    displaced = []  # all +h / -h copies in one batch
    for a in range(len(atoms)):
        for k in range(3):
            for sign in (1, -1):
                copy_ = atoms.copy()
                copy_.positions[a, k] += sign * h
                displaced.append(copy_)
    e = energy(model, displaced).reshape(len(atoms), 3, 2)
    numeric = -(e[..., 0] - e[..., 1]) / (2 * h)
    np.testing.assert_allclose(forces, numeric, atol=1e-7, rtol=1e-6)


def test_double_backward_through_forces() -> None:
    """Forces are differentiable again (rollout training): gradcheck of x -> F(x) and parameter grads."""
    model = tiny_model()
    graph = graph_of([random_molecule(4)])

    def forces_of(x: torch.Tensor) -> torch.Tensor:
        return predict(model, graph.replace(positions=x), create_graph=True).forces

    x = graph.positions.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(forces_of, (x,), eps=1e-6, atol=1e-6, fast_mode=True)
    loss = predict(model, graph, create_graph=True).forces.pow(2).sum()
    loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert grads.pop("terms.egnn.readout.2.bias") is None  # a constant energy offset cannot change forces
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads.values())


def test_rotation_and_translation_invariance() -> None:
    model = tiny_model()
    atoms = random_periodic()
    q, _ = np.linalg.qr(np.random.default_rng(5).normal(size=(3, 3)))
    moved = atoms.copy()
    moved.set_cell(atoms.cell @ q.T, scale_atoms=False)
    moved.positions = atoms.positions @ q.T + np.array([0.3, -1.2, 2.1])
    p0, p1 = predict(model, graph_of([atoms])), predict(model, graph_of([moved]))
    np.testing.assert_allclose(p1.energy.numpy(), p0.energy.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(p1.forces.numpy(), p0.forces.numpy() @ q.T, atol=1e-10)


def test_permutation_invariance() -> None:
    model = tiny_model()
    atoms = random_periodic(7)
    perm = np.random.default_rng(3).permutation(len(atoms))
    p0, p1 = predict(model, graph_of([atoms])), predict(model, graph_of([atoms[perm]]))
    np.testing.assert_allclose(p1.energy.numpy(), p0.energy.numpy(), rtol=1e-12)
    np.testing.assert_allclose(p1.forces.numpy(), p0.forces.numpy()[perm], atol=1e-10)


def test_periodic_images_and_cell_representation() -> None:
    model = tiny_model()
    atoms = random_periodic(5)
    e0 = energy(model, [atoms])[0]
    f0 = predict(model, graph_of([atoms])).forces.numpy()
    # Atoms moved by lattice vectors (then wrapped back or not): same crystal.
    shifted = atoms.copy()
    shifted.positions += np.array([[1, -2, 0], [0, 1, 1], [3, 0, 0], [0, 0, -1], [1, 1, 1]]) @ atoms.cell.array
    wrapped = shifted.copy()
    wrapped.wrap()
    # An equivalent cell: cell' = M @ cell with a unimodular integer M.
    m = np.array([[1, 1, 0], [0, 1, 0], [0, -1, 1]])
    assert round(abs(np.linalg.det(m))) == 1
    recell = atoms.copy()
    recell.set_cell(m @ atoms.cell.array, scale_atoms=False)
    for other in (shifted, wrapped, recell):
        np.testing.assert_allclose(energy(model, [other])[0], e0, rtol=1e-12)
        np.testing.assert_allclose(predict(model, graph_of([other])).forces.numpy(), f0, atol=1e-10)
    # A 2x1x1 supercell holds every atom twice: twice the energy, same forces.
    double = make_supercell(atoms, np.diag([2, 1, 1]))
    np.testing.assert_allclose(energy(model, [double])[0], 2 * e0, rtol=1e-12)
    np.testing.assert_allclose(predict(model, graph_of([double])).forces.numpy()[: len(atoms)], f0, atol=1e-10)


def test_batched_equals_one_by_one() -> None:
    model = tiny_model()
    systems = [random_periodic(6, 1), random_molecule(4, 2), random_periodic(3, 3), random_molecule(1, 4)]
    batch = predict(model, graph_of(systems), stress=True)
    offset = 0
    for b, atoms in enumerate(systems):
        single = predict(model, graph_of([atoms]), stress=True)
        np.testing.assert_allclose(batch.energy[b].item(), single.energy.item(), rtol=1e-12)
        np.testing.assert_allclose(batch.forces[offset : offset + len(atoms)], single.forces, atol=1e-12)
        np.testing.assert_allclose(batch.stress[b], single.stress[0], atol=1e-12)
        offset += len(atoms)


@pytest.mark.parametrize("envelope", ["polynomial", "none"])
def test_edges_beyond_cutoff_change_nothing(envelope: str) -> None:
    model = tiny_model(envelope)
    systems = [random_periodic(6), random_molecule(5)]
    exact, skinned = graph_of(systems, CUTOFF), graph_of(systems, CUTOFF + 1.5)
    assert skinned.edge_index.shape[1] > exact.edge_index.shape[1]
    p0, p1 = predict(model, exact, stress=True), predict(model, skinned, stress=True)
    np.testing.assert_allclose(p1.energy, p0.energy, rtol=1e-13)
    np.testing.assert_allclose(p1.forces, p0.forces, atol=1e-12)
    np.testing.assert_allclose(p1.stress[0], p0.stress[0], atol=1e-12)


def _dimer_curve(model: Potential, distances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Energies and x-forces on the second atom of C-O dimers, all in one batch."""
    dimers = [Atoms("CO", positions=[[0, 0, 0], [r, 0, 0]]) for r in distances]
    out = predict(model, graph_of(dimers, CUTOFF + 1.0))  # the list holds the pair on both sides
    return out.energy.numpy(), out.forces[1::2, 0].numpy()


def test_envelope_makes_energy_smooth_at_cutoff_and_hard_cutoff_jumps() -> None:
    eps = 1e-7
    r = np.array([CUTOFF - eps, CUTOFF + eps])
    e_smooth, f_smooth = _dimer_curve(tiny_model("polynomial"), r)
    e_hard, _ = _dimer_curve(tiny_model("none"), r)
    assert abs(e_smooth[0] - e_smooth[1]) < 1e-12  # continuous (zero value and slope at the cutoff)
    assert np.all(np.abs(f_smooth) < 1e-10)  # the force goes to zero, no impulse
    assert abs(e_hard[0] - e_hard[1]) > 1e-4  # the paper's hard graph: a jump, so NVE energy is not conserved
    # Smooth approach: the force is continuous along a fine scan through the cutoff.
    scan = np.linspace(CUTOFF - 0.3, CUTOFF + 0.1, 41)
    e, f = _dimer_curve(tiny_model("polynomial"), scan)
    assert np.max(np.abs(np.diff(e))) < 1e-2 and np.max(np.abs(np.diff(f))) < 1e-1
    np.testing.assert_allclose(e[scan >= CUTOFF], e[-1], atol=1e-14)


def test_polynomial_envelope_values() -> None:
    x = torch.tensor([0.0, 1.0 - 1e-4, 1.0, 1.5], dtype=F64, requires_grad=True)
    u = polynomial_envelope(x)
    (du,) = torch.autograd.grad(u.sum(), x, create_graph=True)
    assert u[0].item() == 1.0 and abs(u[1].item()) < 1e-9 and u[2].item() == 0.0 and u[3].item() == 0.0
    (d2u,) = torch.autograd.grad(du.sum(), x)
    assert abs(du[1].item()) < 1e-5 and du[2].item() == 0.0 and abs(d2u[1].item()) < 0.1 and d2u[2].item() == 0.0


def test_unknown_species_raises_naming_it() -> None:
    model = tiny_model()
    atoms = Atoms("CH3Cl", positions=np.random.default_rng(0).random((5, 3)) * 2)
    with pytest.raises(ValueError, match=r"unknown atomic number\(s\) \[17\].*\[1, 6, 8\]"):
        model(graph_of([atoms]))
    with pytest.raises(ValueError, match="not in model species"):
        model.set_reference_energies({17: 1.0})


def test_float32_and_no_grad_context() -> None:
    model64 = tiny_model()
    model = copy.deepcopy(model64).float()
    graph = graph_of([random_periodic()], dtype=torch.float32)
    with torch.no_grad():
        out = predict(model, graph, stress=True)
    assert out.energy.dtype == torch.float32 and out.forces.abs().sum() > 0
    ref = predict(model64, graph_of([random_periodic()]))
    np.testing.assert_allclose(out.forces.numpy(), ref.forces.numpy(), atol=1e-4)


def test_reference_energies_and_scale() -> None:
    rng = np.random.default_rng(0)
    truth = {1: -3.4, 6: -9.1, 8: -5.2}
    numbers_list = [rng.choice(SPECIES, rng.integers(2, 9)) for _ in range(12)]
    energies = [sum(truth[int(z)] for z in numbers) for numbers in numbers_list]
    fitted = fit_reference_energies(numbers_list, energies)
    assert fitted.keys() == truth.keys()
    np.testing.assert_allclose([fitted[z] for z in truth], list(truth.values()), atol=1e-10)
    # Same composition everywhere: minimum-norm solution still reproduces the energies.
    same = fit_reference_energies([[1, 1, 6]] * 3, [-10.0, -10.2, -9.8], species=[1, 6, 8])
    assert abs(2 * same[1] + same[6] + 10.0) < 1e-10 and same[8] == 0.0
    forces = [np.full((2, 3), 2.0), np.full((1, 3), -2.0)]
    assert force_rms(forces) == pytest.approx(2.0)
    # init_reference sets both; energy of isolated atoms shifts by the references, forces scale.
    model = egnn_potential(SPECIES, hidden=8, n_rff=6, n_layers=2, cutoff=CUTOFF).double()
    graph = graph_of([random_molecule()])
    before = predict(model, graph)
    done = init_reference(model, numbers_list, energies, forces)
    after = predict(model, graph)
    assert done["scale"] == pytest.approx(2.0)
    shift = sum(fitted[int(z)] for z in graph.numbers)
    np.testing.assert_allclose(after.energy.item(), 2.0 * before.energy.item() + shift, rtol=1e-12)
    np.testing.assert_allclose(after.forces, 2.0 * before.forces, atol=1e-12)
    assert model.reference.reference_energies() == pytest.approx(fitted)
