"""SchNet and PaiNN (schnetpack) as Potential terms: forces = -dE/dx, invariances, periodic images, batching,
weights-only save/load, Dynamic Training (second derivatives) and the CLI from a fresh interpreter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import make_supercell

from longmd.models.base import predict
from longmd.models.potential import Potential
from longmd.models.registry import build_potential
from test_egnn import graph_of, random_molecule, random_periodic

try:  # not pytest.importorskip("schnetpack"): its __init__ fails with torch >= 2.5 (see schnetpack_terms)
    from longmd.models.schnetpack_terms import PRESETS, schnetpack_modules

    schnetpack_modules()
except ImportError as exc:
    pytest.skip(f"schnetpack is not installed (pip install 'longmd[schnetpack]'): {exc}", allow_module_level=True)

SPECIES = [1, 6, 8]
CUTOFF = 3.0
KINDS = ["schnet", "painn"]
TINY = {"n_atom_basis": 8, "n_interactions": 2, "n_rbf": 8, "cutoff": CUTOFF}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(kind: str, seed: int = 0) -> Potential:
    torch.manual_seed(seed)
    model = build_potential(SPECIES, [{"name": kind, "options": TINY}]).double()
    model.set_reference_energies({1: -1.5, 6: -7.25, 8: -4.0})
    model.set_scale(0.7)
    return model


def energy_forces(model: Potential, atoms_list: list[Atoms]) -> tuple[np.ndarray, np.ndarray]:
    out = predict(model, graph_of(atoms_list, CUTOFF))
    return out.energy.numpy(), out.forces.numpy()


def rotation(seed: int = 3) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))  # a proper rotation


@pytest.mark.parametrize("kind", KINDS)
def test_small_preset_is_egnn_small_sized_and_lazy(kind) -> None:
    model = build_potential([13, 29], [{"name": kind, "preset": "small"}])
    assert 15_000 < model.n_parameters() < 35_000  # the EGNN small preset has 18,337 with these species
    assert model.term(kind).kind == kind and model.cutoff == PRESETS[kind]["small"]["cutoff"]
    assert model.term(kind).hyperparameters()["n_atom_basis"] == PRESETS[kind]["small"]["n_atom_basis"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("periodic", [True, False])
def test_forces_are_minus_the_energy_gradient(kind, periodic) -> None:
    model = tiny(kind)
    atoms = random_periodic(6) if periodic else random_molecule(5)
    _, forces = energy_forces(model, [atoms])
    assert np.abs(forces).max() > 1e-3  # not trivially zero
    eps = 1e-5
    for a, k in [(0, 0), (1, 2), (3, 1)]:
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[a, k] += eps
        minus.positions[a, k] -= eps
        numeric = -(energy_forces(model, [plus])[0][0] - energy_forces(model, [minus])[0][0]) / (2 * eps)
        assert forces[a, k] == pytest.approx(numeric, abs=1e-7)


@pytest.mark.parametrize("kind", KINDS)
def test_rotation_translation_and_permutation(kind) -> None:
    model = tiny(kind)
    atoms = random_periodic(7, seed=4)
    e0, f0 = energy_forces(model, [atoms])
    R = rotation()
    turned = Atoms(numbers=atoms.numbers, positions=atoms.positions @ R.T, cell=np.asarray(atoms.cell) @ R.T,
                   pbc=True)
    e, f = energy_forces(model, [turned])
    assert e[0] == pytest.approx(e0[0], abs=1e-10)
    np.testing.assert_allclose(f, f0 @ R.T, atol=1e-10)  # forces rotate with the structure
    moved = atoms.copy()
    moved.translate([0.37, -1.1, 2.3])
    e, f = energy_forces(model, [moved])
    assert e[0] == pytest.approx(e0[0], abs=1e-10)
    np.testing.assert_allclose(f, f0, atol=1e-10)
    order = np.random.default_rng(5).permutation(len(atoms))
    e, f = energy_forces(model, [atoms[order]])
    assert e[0] == pytest.approx(e0[0], abs=1e-10)
    np.testing.assert_allclose(f, f0[order], atol=1e-10)


@pytest.mark.parametrize("kind", KINDS)
def test_periodic_images_equal_the_explicit_supercell(kind) -> None:
    """In a 2.4 Å cell with a 3 Å cutoff every atom sees its own images; the 2x2x2 supercell (which holds
    them explicitly) has 8 times the energy and the same forces, and a lattice-vector shift changes nothing."""
    model = tiny(kind)
    cell = np.array([[2.4, 0.0, 0.0], [0.3, 2.5, 0.0], [0.0, 0.2, 2.6]])
    small = Atoms("HO", scaled_positions=[[0.1, 0.2, 0.3], [0.6, 0.55, 0.7]], cell=cell, pbc=True)
    big = make_supercell(small, 2 * np.eye(3))
    e_small, f_small = energy_forces(model, [small])
    e_big, f_big = energy_forces(model, [big])
    assert e_big[0] == pytest.approx(8 * e_small[0], rel=1e-10)
    np.testing.assert_allclose(f_big, np.tile(f_small, (8, 1)), atol=1e-10)
    shifted = small.copy()
    shifted.positions[0] += cell[0] - 2 * cell[2]  # outside the cell: the same structure
    e, f = energy_forces(model, [shifted])
    assert e[0] == pytest.approx(e_small[0], abs=1e-10)
    np.testing.assert_allclose(f, f_small, atol=1e-10)


@pytest.mark.parametrize("kind", KINDS)
def test_batched_equals_one_by_one(kind) -> None:
    model = tiny(kind)
    systems = [random_periodic(6, seed=1), random_molecule(5, seed=2), random_periodic(4, seed=7)]
    energies, forces = energy_forces(model, systems)
    start = 0
    for b, atoms in enumerate(systems):
        e, f = energy_forces(model, [atoms])
        assert energies[b] == pytest.approx(e[0], abs=1e-10)
        np.testing.assert_allclose(forces[start : start + len(atoms)], f, atol=1e-10)
        start += len(atoms)


@pytest.mark.parametrize("kind", KINDS)
def test_weights_only_save_and_load_round_trip(kind, tmp_path) -> None:
    from longmd.models.io import load_model, save_model

    model = tiny(kind, seed=11)
    path = save_model(model, tmp_path / f"{kind}.pt")
    payload = torch.load(path, weights_only=True, map_location="cpu")  # no pickled code in the file
    assert payload["hyperparameters"]["terms"][0]["kind"] == kind
    loaded = load_model(path)
    assert isinstance(loaded, Potential) and loaded.term(kind).hyperparameters() == model.term(kind).hyperparameters()
    graph = graph_of([random_periodic(6), random_molecule(5)], CUTOFF)
    a, b = predict(model, graph), predict(loaded, graph)
    assert torch.equal(a.energy, b.energy) and torch.equal(a.forces, b.forces)


@pytest.mark.parametrize("kind", KINDS)
def test_force_loss_has_finite_parameter_gradients(kind) -> None:
    """Training on forces differentiates -dE/dx with respect to the parameters (double backward)."""
    model = tiny(kind)
    graph = graph_of([random_periodic(6)], CUTOFF)
    positions = graph.positions.clone().requires_grad_(True)
    energy = model(graph.replace(positions=positions)).sum()
    (forces,) = torch.autograd.grad(-energy, positions, create_graph=True)
    grads = torch.autograd.grad(forces.pow(2).sum(), list(model.term(kind).representation.parameters()))
    assert all(torch.isfinite(g).all() for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0


@pytest.mark.parametrize("kind", KINDS)
def test_dynamic_training_and_reload(kind, emt_data, tmp_path) -> None:
    """``model.name: schnet|painn`` trains with DT (rollouts at S = 2) and reloads like the EGNN."""
    from conftest import tiny_training_config
    from longmd.models.io import load_model
    from longmd.training.trainer import train

    cfg = tiny_training_config(emt_data, tmp_path / "run", f"model.name={kind}",
                               "model.options={n_atom_basis: 8, n_interactions: 1, n_rbf: 8}", "training.s_max=2",
                               "training.max_epochs_per_s=1", "training.val_length=3", "training.val_windows=2",
                               "training.windows_per_epoch=4", "training.batch_size=4")
    result = train(cfg)
    assert [r["S"] for r in result.records] == [1, 2]
    assert all(np.isfinite(r["val_mepa"]) for r in result.records)
    model = load_model(result.best_model)
    assert model.term_names == [kind] and model.term(kind).hyperparameters()["n_atom_basis"] == 8


def test_trains_from_a_fresh_interpreter(tmp_path) -> None:
    """``longmd train demo`` of a SchNet + PaiNN potential in a new process (import order once broke MACE there);
    one run for both kinds, as a fresh interpreter costs most of the time."""
    from longmd.models.io import load_model
    from test_cli_traps import TINY as TINY_RUN
    from test_cli_traps import run_cli

    out = tmp_path / "run"
    small = "n_atom_basis: 8, n_interactions: 1, n_rbf: 8"
    done = run_cli("train", "demo", "--out", str(out), "--set", f"model.terms=[{{name: schnet, options: {{{small}, "
                   f"n_filters: 8}}}}, {{name: painn, options: {{{small}}}}}]", *TINY_RUN)
    assert done.returncode == 0, done.stderr[-3000:]
    assert load_model(out / "best.pt").term_names == ["schnet", "painn"]



def test_config_errors_name_the_option_and_the_extra(monkeypatch) -> None:
    from longmd.config import ConfigError, load_config
    from longmd.models import schnetpack_terms
    from longmd.training.setup import build_model

    cfg = load_config(None, ["model.name=painn", "model.options={n_filters: 8}"])
    with pytest.raises(ConfigError, match="model.options.n_filters: not an option of painn"):
        build_model(cfg, [1, 8])
    cfg = load_config(None, ["model.name=schnet", "model.preset=medium"])
    assert build_model(cfg, [1, 8]).term("schnet").hyperparameters()["n_atom_basis"] == 64
    monkeypatch.setattr(schnetpack_terms.importlib.util, "find_spec", lambda name: None)  # as if not installed
    schnetpack_terms.schnetpack_modules.cache_clear()
    try:
        with pytest.raises(ConfigError, match=r"^model: .*needs? schnetpack \(pip install 'longmd\[schnetpack\]'\)"):
            build_model(load_config(None, ["model.name=schnet"]), [1, 8])
    finally:
        monkeypatch.undo()
        schnetpack_terms.schnetpack_modules.cache_clear()


def test_importing_longmd_does_not_import_schnetpack() -> None:
    import os
    import subprocess
    import sys

    from test_cli_traps import SRC

    code = ("import sys, longmd.cli, longmd.models.io, longmd.models.registry, longmd.training.trainer; "
            "print(sorted(m for m in sys.modules if m.startswith('schnetpack')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr[-2000:]
