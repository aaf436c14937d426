"""RDF, partial RDFs and distance histograms on cases with known answers, and against ASE."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.geometry.rdf import get_rdf

from longmd.analysis.structure import (
    distance_histogram,
    histogram_l1,
    histogram_mae,
    is_bulk,
    partial_rdfs,
    rdf,
    rdf_mae,
    rdf_normalization,
)


def test_ideal_gas_rdf_is_one() -> None:
    rng = np.random.default_rng(1)
    box = 20.0
    frames = rng.uniform(0.0, box, size=(3, 1500, 3))
    r, g = rdf(frames, np.eye(3) * box, True, r_max=6.0, n_bins=30)
    assert rdf_normalization(frames, np.eye(3) * box, True) == "bulk"  # "auto" keeps g(r) for bulk
    assert r[0] == pytest.approx(0.1)
    far = r > 2.0
    assert np.abs(g[far] - 1.0).max() < 0.05
    assert g[far].mean() == pytest.approx(1.0, abs=0.01)


def test_fcc_crystal_shells_and_coordination_numbers() -> None:
    a = 3.61
    atoms = bulk("Cu", "fcc", a=a, cubic=True).repeat(4)
    r_max, n_bins = 6.5, 325
    r, g = rdf(atoms.positions, atoms.cell.array, True, r_max, n_bins)
    shells = a * np.sqrt([0.5, 1.0, 1.5, 2.0, 2.5, 3.0])
    coordination = [12, 6, 24, 12, 24, 8]
    dr = r_max / n_bins
    shell_bins = np.floor(shells / dr).astype(int)
    assert set(np.flatnonzero(g > 0)) == set(shell_bins)
    rho = len(atoms) / atoms.get_volume()
    edges = np.linspace(0, r_max, n_bins + 1)
    per_atom = g * rho * 4 / 3 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    np.testing.assert_allclose(per_atom[shell_bins], coordination, rtol=1e-9)


def _nacl(seed: int) -> Atoms:
    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat(2)
    atoms.positions += np.random.default_rng(seed).normal(0.0, 0.15, atoms.positions.shape)
    return atoms


def test_agrees_with_ase_total_and_partial() -> None:
    images = [_nacl(0), _nacl(1)]
    positions = np.stack([im.positions for im in images])
    cell = images[0].cell.array
    g_ase = np.mean([get_rdf(im, 5.5, 55, no_dists=True) for im in images], axis=0)
    r_ase = get_rdf(images[0], 5.5, 55)[1]
    r, g = rdf(positions, cell, True, 5.5, 55)
    np.testing.assert_allclose(r, r_ase)
    np.testing.assert_allclose(g, g_ase, atol=1e-10)
    r, parts = partial_rdfs(positions, images[0].numbers, cell, True, 5.5, 55)
    assert set(parts) == {(11, 11), (11, 17), (17, 17)}
    for (za, zb), g_ab in parts.items():
        ref = np.mean([get_rdf(im, 5.5, 55, elements=(za, zb), no_dists=True) for im in images], axis=0)
        np.testing.assert_allclose(g_ab, ref, atol=1e-10)
        _, g_ba = rdf(positions, cell, True, 5.5, 55, images[0].numbers, pair=(zb, za))
        np.testing.assert_allclose(g_ba, g_ab, atol=1e-12)


def test_non_periodic_with_volume_agrees_with_ase() -> None:
    cluster = _nacl(2)
    cluster.pbc = False
    cluster.cell = np.zeros((3, 3))
    g_ase = get_rdf(cluster, 6.0, 40, volume=1500.0, no_dists=True)
    _, g = rdf(cluster.positions, None, False, 6.0, 40, volume=1500.0)
    np.testing.assert_allclose(g, g_ase, atol=1e-10)
    with pytest.raises(ValueError, match="volume"):
        rdf(cluster.positions, None, False, 6.0, 40, normalization="bulk")
    _, n = rdf(cluster.positions, None, False, 6.0, 40)  # auto: a molecule has no bulk density
    np.testing.assert_allclose(n, g_ase * len(cluster) / 1500.0, atol=1e-12)


def _slab(vacuum: float, seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames of 120 random atoms in a 6 Å thick layer of a 10 x 10 Å periodic cell, ``vacuum`` Å above it."""
    rng = np.random.default_rng(seed)
    frames = rng.uniform(0.0, 1.0, size=(4, 120, 3)) * np.array([10.0, 10.0, 6.0])
    numbers = np.array([1, 6] * 60)
    return frames, numbers, np.diag([10.0, 10.0, 6.0 + vacuum])


def test_slab_rdf_does_not_depend_on_the_vacuum() -> None:
    """A slab's g(r) by N/V of the cell scales with the vacuum chosen; the reported pair density does not."""
    curves, bulk_curves = [], []
    for vacuum in (10.0, 30.0):
        frames, numbers, cell = _slab(vacuum)
        assert not is_bulk(frames, cell, True) and rdf_normalization(frames, cell, True) == "pair_density"
        r, n = rdf(frames, cell, True, 4.5, 45)
        _, parts = partial_rdfs(frames, numbers, cell, True, 4.5, 45)
        curves.append((n, parts))
        bulk_curves.append(rdf(frames, cell, True, 4.5, 45, normalization="bulk")[1])
    np.testing.assert_allclose(curves[0][0], curves[1][0], atol=1e-12)
    for key in curves[0][1]:
        np.testing.assert_allclose(curves[0][1][key], curves[1][1][key], atol=1e-12)
    far = r > 2.0
    assert bulk_curves[1][far].mean() == pytest.approx(bulk_curves[0][far].mean() * 36.0 / 16.0, rel=1e-9)
    # Deep inside the layer (r below its half thickness) n(r) is the layer's density 120 / 600 Å^3, a bit less
    # as the shells reach past its faces: between half and all of it.
    assert 0.5 * 0.2 < n[(r > 1.5) & (r < 3.0)].mean() < 0.2


def test_bulk_detection() -> None:
    frames, _, cell = _slab(10.0)
    assert not is_bulk(frames, cell, [True, True, False])
    assert is_bulk(frames, np.diag([10.0, 10.0, 6.0]), True)  # the same atoms filling their cell
    assert is_bulk(frames, cell, True, gap_A=20.0)  # a 10 Å gap is below a 20 Å threshold
    with pytest.raises(ValueError, match="normalization"):
        rdf_normalization(frames, cell, True, normalization="slab")


def test_rdf_mae() -> None:
    a, b = np.array([1.0, 2.0, 0.0]), np.array([1.0, 1.0, 3.0])
    assert rdf_mae(a, a) == 0.0
    assert rdf_mae(a, b) == pytest.approx(4.0 / 3.0)
    with pytest.raises(ValueError):
        rdf_mae(a, b[:2])


def test_distance_histogram_of_a_dimer_and_normalisation() -> None:
    dimer = np.array([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0]])
    r, h = distance_histogram(dimer, r_max=3.0, n_bins=30)
    assert np.flatnonzero(h).tolist() == [15]
    assert h[15] == pytest.approx(10.0)  # 1 / dr
    frames = np.random.default_rng(3).uniform(0, 8, size=(4, 30, 3))
    r, h = distance_histogram(frames, np.eye(3) * 8, True, r_max=4.0, n_bins=40)
    assert np.sum(h) * (r[1] - r[0]) == pytest.approx(1.0)


def test_histogram_mae_zero_for_identical_and_positive_otherwise() -> None:
    rng = np.random.default_rng(4)
    numbers = np.array([1, 1] + [6] * 10)
    ref = rng.uniform(0, 6, size=(3, 12, 3))
    r, h_ref = distance_histogram(ref, r_max=5.0, n_bins=50)
    _, h_same = distance_histogram(ref.copy(), r_max=5.0, n_bins=50)
    assert histogram_mae(h_ref, h_same) == 0.0
    assert histogram_l1(h_ref, h_same, r) == 0.0
    _, h_other = distance_histogram(ref + rng.normal(0, 0.3, ref.shape), r_max=5.0, n_bins=50)
    assert histogram_mae(h_ref, h_other) > 0.0
    assert 0.0 < histogram_l1(h_ref, h_other, r) <= 2.0
    _, h_hh = distance_histogram(ref, r_max=8.0, n_bins=80, numbers=numbers, pair=(1, 1))
    hh = np.linalg.norm(ref[:, 0] - ref[:, 1], axis=1)
    assert np.sum(h_hh > 0) == len(np.unique(np.floor(hh / 0.1)))


def test_total_rdf_is_concentration_weighted_sum_of_partials() -> None:
    atoms = _nacl(5)
    numbers = atoms.numbers.copy()
    numbers[:3] = 1  # three species with unequal counts
    _, g = rdf(atoms.positions, atoms.cell.array, True, 5.0, 25)
    _, parts = partial_rdfs(atoms.positions, numbers, atoms.cell.array, True, 5.0, 25)
    c = {z: np.mean(numbers == z) for z in set(numbers.tolist())}
    total = sum((1 if a == b else 2) * c[a] * c[b] * g_ab for (a, b), g_ab in parts.items())
    np.testing.assert_allclose(total, g, atol=1e-12)


def test_bonds_of_zinc_blende_count_four_heteropolar_and_no_homopolar_bonds():
    from ase.build import bulk

    from longmd.analysis.structure import bond_cutoff, bonds

    atoms = bulk("SiC", "zincblende", a=4.36).repeat(2)
    b = bonds(atoms.positions, atoms.numbers, atoms.cell.array, True)
    assert b["Si-C"]["coordination"] == pytest.approx(4.0) and b["C-Si"]["coordination"] == pytest.approx(4.0)
    assert b["Si-Si"]["coordination"] == 0.0 and b["C-C"]["coordination"] == 0.0
    assert b["Si-C"]["min_distance_A"] == pytest.approx(4.36 * np.sqrt(3) / 4)
    assert b["Si-Si"]["min_distance_A"] == pytest.approx(4.36 / np.sqrt(2))
    assert b["C-Si"]["cutoff_A"] == pytest.approx(bond_cutoff(6, 14))


def test_bonds_see_one_homopolar_pair_and_average_over_frames():
    from longmd.analysis.structure import bonds

    # two Se atoms 2.3 Å apart (bonded) and one Ge far away; in frame 2 the Se pair is pulled apart
    frames = np.array([[[0, 0, 0], [2.3, 0, 0], [10, 10, 10]], [[0, 0, 0], [4.5, 0, 0], [10, 10, 10]]], float)
    b = bonds(frames, np.array([34, 34, 32]), None, False)
    assert b["Se-Se"]["coordination"] == pytest.approx(0.5)  # each Se has one Se neighbour in one of two frames
    assert b["Se-Se"]["min_distance_A"] == pytest.approx(2.3)
    assert b["Ge-Se"]["coordination"] == 0.0 and b["Ge-Se"]["min_distance_A"] is None
