"""Pair and triplet terms (the inductive-bias paper's NN2, NN3) alone and under a longer-range EGNN: forces,
invariances, smooth cutoffs, batching, files, and the decomposition of the energy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import make_supercell
from scipy.spatial.transform import Rotation

from longmd.models.base import predict
from longmd.models.io import load_model, save_model
from longmd.models.potential import Potential
from longmd.models.registry import build_potential
from test_egnn import graph_of, random_periodic

SPECIES = [1, 6, 8]
TERMS = {
    "pair": {"name": "pair", "options": {"hidden": 8, "cutoff": 3.0}},
    "pair_r": {"name": "pair_r", "kind": "pair", "options": {"hidden": 8, "cutoff": 3.0, "input": "r"}},
    "triplet": {"name": "triplet", "options": {"hidden": 8, "cutoff": 3.5}},
    "egnn": {"name": "egnn", "options": {"hidden": 8, "n_rff": 6, "n_layers": 2, "cutoff": 5.0}},
}
MODELS = [("pair",), ("pair_r",), ("triplet",), ("pair", "triplet", "egnn")]


def randomised(names: tuple[str, ...], seed: int = 0) -> Potential:
    """A float64 Potential of the named terms, every parameter drawn at random (output layers start at zero)."""
    model = build_potential(SPECIES, [TERMS[n] for n in names]).double()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.5)
    model.set_reference_energies({1: -1.0, 6: -2.0, 8: -3.0})
    model.set_scale(0.8)
    return model


def energy_forces(model, atoms_list: list[Atoms]) -> tuple[np.ndarray, np.ndarray]:
    p = predict(model, graph_of(atoms_list, cutoff=model.cutoff + 0.5))  # a graph longer than every term's cutoff
    return p.energy.numpy(), p.forces.numpy()


def interaction(model, atoms: Atoms) -> float:
    """Energy less the reference energies, eV."""
    ref = model.reference.reference_energies()
    return float(energy_forces(model, [atoms])[0][0]) - sum(ref[int(z)] for z in atoms.numbers)


@pytest.mark.parametrize("names", MODELS)
def test_forces_are_minus_gradient_by_finite_differences(names) -> None:
    model = randomised(names)
    atoms = random_periodic(6)
    _, forces = energy_forces(model, [atoms])
    assert np.abs(forces).max() > 1e-2  # the terms act
    h = 1e-5
    for a in range(len(atoms)):
        for c in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[a, c] += h
            minus.positions[a, c] -= h
            fd = -(energy_forces(model, [plus])[0][0] - energy_forces(model, [minus])[0][0]) / (2 * h)
            assert forces[a, c] == pytest.approx(fd, rel=1e-6, abs=1e-7)


@pytest.mark.parametrize("names", MODELS)
def test_rotation_translation_permutation_and_periodic_image_invariance(names) -> None:
    model = randomised(names)
    atoms = random_periodic(6)
    e0, f0 = energy_forces(model, [atoms])
    rot = Rotation.from_euler("xyz", [0.3, -1.1, 2.0]).as_matrix()
    moved = atoms.copy()
    moved.set_cell(atoms.cell.array @ rot.T, scale_atoms=False)
    moved.positions = atoms.positions @ rot.T + np.array([0.4, -2.0, 1.3])
    e1, f1 = energy_forces(model, [moved])
    np.testing.assert_allclose(e1, e0, rtol=1e-12)
    np.testing.assert_allclose(f1, f0 @ rot.T, atol=1e-10)
    perm = np.random.default_rng(0).permutation(len(atoms))
    e2, f2 = energy_forces(model, [atoms[perm]])
    np.testing.assert_allclose(e2, e0, rtol=1e-12)
    np.testing.assert_allclose(f2, f0[perm], atol=1e-10)
    shifted = atoms.copy()
    shifted.positions += np.array([[1, -2, 0], [0, 1, 1], [3, 0, 0], [0, 0, -1], [1, 1, 1], [0, 2, 0]]) @ atoms.cell
    e3, f3 = energy_forces(model, [shifted])
    np.testing.assert_allclose(e3, e0, rtol=1e-12)
    np.testing.assert_allclose(f3, f0, atol=1e-10)
    double = make_supercell(atoms, np.diag([2, 1, 1]))  # extensive: twice the atoms, twice the interaction
    assert interaction(model, double) == pytest.approx(2 * interaction(model, atoms), rel=1e-10)


def test_periodic_images_of_one_neighbour_count_as_neighbours() -> None:
    """A cell shorter than the cutoff: an atom's own images are its neighbours; the energy of a 1-atom cell equals
    a third of its 3-atom supercell's, through the pair and the triplet term."""
    for names in (("pair",), ("triplet",)):
        model = randomised(names)
        one = Atoms("C", positions=[[0.1, 0.2, 0.3]], cell=[[2.1, 0, 0], [0.3, 2.4, 0], [0, 0.2, 2.6]], pbc=True)
        assert abs(interaction(model, one)) > 1e-3
        assert interaction(model, make_supercell(one, np.diag([1, 3, 1]))) == pytest.approx(
            3 * interaction(model, one), rel=1e-10)


def test_batched_equals_one_by_one() -> None:
    model = randomised(("pair", "triplet", "egnn"))
    systems = [random_periodic(6, 1), random_periodic(4, 2), random_periodic(5, 3)]
    e, f = energy_forces(model, systems)
    one = [energy_forces(model, [s]) for s in systems]
    np.testing.assert_allclose(e, [o[0][0] for o in one], rtol=1e-12)
    np.testing.assert_allclose(f, np.concatenate([o[1] for o in one]), atol=1e-12)


def test_each_term_sees_only_its_own_cutoff_inside_a_longer_graph() -> None:
    """In pair (3 Å) + triplet (3.5 Å) + EGNN (5 Å), each term gives what it gives alone on a graph of its own
    cutoff, and the total is their sum."""
    model = randomised(("pair", "triplet", "egnn"))
    atoms = random_periodic(6)
    graph = graph_of([atoms], cutoff=6.0)
    index = model.reference.index(graph.numbers)
    with torch.no_grad():
        total = float(model(graph)[0]) - sum(model.reference.reference_energies()[int(z)] for z in atoms.numbers)
        parts = {name: float(model.term(name)(graph_of([atoms], cutoff=term.cutoff), index).sum())
                 for name, term in model.terms.items()}
    assert all(abs(v) > 1e-3 for v in parts.values())
    assert total == pytest.approx(0.8 * sum(parts.values()), rel=1e-12)


def dimer(r: float, numbers=(6, 8)) -> Atoms:
    return Atoms(numbers=list(numbers), positions=[[0, 0, 0], [r, 0, 0]], cell=np.eye(3) * 20, pbc=False)


def trimer(r_ik: float) -> Atoms:
    """Centre O at the origin, C at 1.2 Å, H at r_ik at 100°: the only triplets are at O and H's bond is r_ik."""
    angle = np.deg2rad(100.0)
    return Atoms("OCH", positions=[[0, 0, 0], [1.2, 0, 0], [r_ik * np.cos(angle), r_ik * np.sin(angle), 0]])


@pytest.mark.parametrize(("names", "make", "cutoff"), [(("pair",), dimer, 3.0), (("pair_r",), dimer, 3.0),
                                                        (("triplet",), trimer, 3.5)])
def test_energy_and_forces_go_to_zero_smoothly_at_the_cutoff(names, make, cutoff) -> None:
    """E ~ δ^3 and F ~ δ^2 at a distance δ inside the cutoff (the envelope's zero value, slope and curvature);
    exactly 0 beyond. In the trimer the moving bond is O-H, the only bond of H."""
    model = randomised(names)

    def at(r: float) -> tuple[float, float]:
        atoms = make(r)
        e, f = energy_forces(model, [atoms])
        e_far = energy_forces(model, [make(cutoff + 2.0)])[0][0]  # the same system with the bond fully cut
        return float(e[0] - e_far), float(np.abs(f[-1]).max() if make is trimer else np.abs(f).max())

    e1, f1 = at(cutoff - 1e-2)
    e2, f2 = at(cutoff - 1e-3)
    assert abs(e1) > 1e-9 and e2 / e1 == pytest.approx(1e-3, rel=0.05)
    assert f1 > 1e-7 and f2 / f1 == pytest.approx(1e-2, rel=0.05)
    assert at(cutoff + 1e-9) == (0.0, 0.0)


def test_a_dimer_has_the_pair_energy_once() -> None:
    model = randomised(("pair",))
    term = model.term("pair")
    for numbers, (a, b) in (((6, 8), (1, 2)), ((8, 6), (2, 1)), ((1, 1), (0, 0))):
        r = torch.tensor([2.1], dtype=torch.float64)
        phi = float(term.pair_energy(r, torch.tensor([a]), torch.tensor([b])).detach()[0])
        assert interaction(model, dimer(2.1, numbers)) == pytest.approx(0.8 * phi, rel=1e-12)
        assert abs(phi) > 1e-3


def test_a_trimer_has_one_triplet_energy_per_centre() -> None:
    model = randomised(("triplet",))
    term = model.term("triplet")
    atoms = Atoms("OCH", positions=[[0, 0, 0], [1.1, 0.2, 0], [-0.4, 1.7, 0.3]])
    x = torch.tensor(atoms.positions)
    index = {"H": 0, "C": 1, "O": 2}
    total = 0.0
    for i, j, k in ((0, 1, 2), (1, 0, 2), (2, 0, 1)):
        c, a, b = (torch.tensor([index[atoms[n].symbol]]) for n in (i, j, k))
        total += float(term.triplet_energy(x[[j]] - x[[i]], x[[k]] - x[[i]], c, a, b).detach()[0])
    assert interaction(model, atoms) == pytest.approx(0.8 * total, rel=1e-12)
    assert interaction(model, atoms[[0, 2, 1]]) == pytest.approx(0.8 * total, rel=1e-12)  # neighbours swapped
    assert interaction(model, dimer(1.5)) == 0.0  # a dimer has no triplet


def test_triplet_tells_which_bond_goes_to_which_species() -> None:
    """psi(r_OC, r_OH, ...) is not symmetric in the two bonds of a mixed pair: swapping the bond lengths of C and
    H changes the energy (one MLP per unordered pair, its input ordered by species)."""
    term = randomised(("triplet",)).term("triplet")
    short, long = torch.tensor([[1.1, 0.0, 0.0]]), torch.tensor([[-0.3, 1.6, 0.0]])
    c, carbon, hydrogen = torch.tensor([2]), torch.tensor([1]), torch.tensor([0])
    e = term.triplet_energy(short.double(), long.double(), c, carbon, hydrogen)
    same = term.triplet_energy(long.double(), short.double(), c, hydrogen, carbon)  # the same triplet, other order
    other = term.triplet_energy(long.double(), short.double(), c, carbon, hydrogen)  # bond lengths swapped
    assert float(e.detach()) == float(same.detach()) and abs(float((e - other).detach())) > 1e-3


def test_untrained_terms_add_nothing() -> None:
    """Fresh pair and triplet terms (and an EGNN with zero_readout) start at exactly zero energy and force, so
    a stage that trains another term sees only that one."""
    model = build_potential(SPECIES, [TERMS["pair"], TERMS["triplet"],
                                      {"name": "egnn", "options": {**TERMS["egnn"]["options"], "zero_readout": True}}])
    model = model.double()
    p = predict(model, graph_of([random_periodic(6)], cutoff=5.5))
    assert float(p.energy[0]) == 0.0 and float(p.forces.abs().max()) == 0.0


def test_save_load_round_trip_is_bit_identical(tmp_path) -> None:
    model = randomised(("pair", "pair_r", "triplet", "egnn"))
    loaded = load_model(save_model(model, tmp_path / "m.pt"))
    assert loaded.hyperparameters() == model.hyperparameters()
    assert loaded.term_names == ["pair", "pair_r", "triplet", "egnn"]
    atoms = [random_periodic(6)]
    e0, f0 = energy_forces(model, atoms)
    e1, f1 = energy_forces(loaded, atoms)
    assert np.array_equal(e0, e1) and np.array_equal(f0, f1)


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="input must be one of"):
        build_potential(SPECIES, [{"name": "pair", "options": {"input": "r3"}}])
    with pytest.raises(ValueError, match="cutoff > 0"):
        build_potential(SPECIES, [{"name": "triplet", "options": {"cutoff": 0}}])
