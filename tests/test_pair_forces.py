"""Pairwise forces F_i = sum_j F_ij: the known answer of a pair term (-dphi/dr), the exact sum for every term,
binning, and ``longmd analyze pair-forces``."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from longmd.analysis.pair_forces import PairForces, bin_pair_forces, pair_forces
from longmd.cli import main
from longmd.models.io import save_model
from test_decomposition_terms import randomised
from test_egnn import graph_of, random_molecule, random_periodic


def small_cell() -> Atoms:
    """4 atoms in a cell shorter than the 3 Å cutoff along one axis: atoms meet their own images."""
    rng = np.random.default_rng(4)
    cell = np.array([[2.8, 0.0, 0.0], [0.4, 3.9, 0.0], [0.2, -0.3, 4.1]])
    return Atoms(numbers=[1, 6, 8, 6], scaled_positions=rng.random((4, 3)), cell=cell, pbc=True)


@pytest.mark.parametrize("atoms", [small_cell(), random_periodic(6), random_molecule(5)], ids=["images", "cell",
                                                                                                  "molecule"])
def test_pair_term_alone_gives_minus_dphi_dr_exactly(atoms) -> None:
    model = randomised(("pair",))
    graph = graph_of([atoms], cutoff=3.5)
    part = pair_forces(model, graph)
    assert len(part.r) * 2 == graph.edge_index.shape[1]  # every pair once
    assert np.abs(part.radial).max() > 1e-3
    term, scale = model.term("pair"), float(model.reference.scale)
    index = model.reference.index(torch.tensor(atoms.numbers))
    r = torch.tensor(part.r, requires_grad=True)
    phi = scale * term.pair_energy(r, index[part.i], index[part.j])
    (dphi,) = torch.autograd.grad(phi.sum(), r)
    np.testing.assert_allclose(part.radial, -dphi.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(part.across, 0.0, atol=1e-12)  # central
    np.testing.assert_allclose(part.summed(len(atoms)), part.forces, atol=1e-12)
    if atoms.pbc.all() and len(atoms) == 4:
        assert bool((part.i == part.j).any())  # an atom and its own image form a pair


@pytest.mark.parametrize(("names", "central"), [(("egnn",), True), (("triplet",), False),
                                                (("pair", "triplet", "egnn"), False)])
def test_pair_forces_sum_to_the_forces_of_every_term(names, central) -> None:
    """Exact for any model of edge vectors; along the bonds for a distance-based one (EGNN), not for angles."""
    model = randomised(names)
    atoms = random_periodic(6)
    part = pair_forces(model, graph_of([atoms], cutoff=5.5))
    assert np.abs(part.forces).max() > 1e-3
    np.testing.assert_allclose(part.summed(len(atoms)), part.forces, atol=1e-10)
    assert (np.abs(part.across).max() < 1e-10) == central


def test_bins_by_species_pair_and_distance() -> None:
    part = PairForces(i=np.array([0, 0, 1]), j=np.array([1, 2, 2]), z_i=np.array([14, 14, 6]),
                      z_j=np.array([6, 6, 6]), r=np.array([1.91, 1.94, 2.52]), radial=np.array([1.0, 3.0, -0.5]),
                      across=np.zeros(3), vector=np.zeros((3, 3)), forces=np.zeros((3, 3)))
    rows = bin_pair_forces([part, part], r_max=3.0, width=0.1)
    assert [(r["pair"], r["count"]) for r in rows] == [("C-C", 2), ("C-Si", 4)]
    si_c = rows[1]
    assert si_c["r_lo_A"] == pytest.approx(1.9) and si_c["mean_eV_per_A"] == pytest.approx(2.0)
    assert si_c["std_eV_per_A"] == pytest.approx(1.0)


def test_analyze_pair_forces_command(tmp_path, capsys) -> None:
    model = randomised(("pair", "egnn"))
    path = save_model(model, tmp_path / "m.pt")
    frames = []
    for seed in range(3):
        atoms = random_periodic(6, seed)
        atoms.calc = SinglePointCalculator(atoms, energy=0.0, forces=np.zeros((6, 3)))
        atoms.info["traj_id"] = seed  # other species in every frame
        atoms.set_momenta(np.zeros((6, 3)))
        frames.append(atoms)
    write(tmp_path / "frames.extxyz", frames)
    out = tmp_path / "out"
    code = main(["analyze", "pair-forces", str(path), str(tmp_path / "frames.extxyz"), "--out", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "reproduces the forces" in printed.out
    rows = list(csv.DictReader((out / "pair_forces.csv").read_text().splitlines()))
    assert {r["pair"] for r in rows} >= {"H-C", "H-O"} and all(float(r["r_hi_A"]) <= 5.05 for r in rows)
    summary = json.loads((out / "pair_forces.json").read_text())
    assert summary["frames"] == 3 and summary["max_error_of_sum_eV_per_A"] < 1e-8
    assert (out / "pair_forces.png").stat().st_size > 1000
