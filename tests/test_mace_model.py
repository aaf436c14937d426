"""MACE through longmd's graph equals MACE through its own ASE calculator, batched and periodic."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule

from conftest import integrator, md, thermalised, tiny_training_config
from longmd.data.graph import Graph
from longmd.dynamics.neighbor_policy import VerletNeighbors
from longmd.dynamics.state import MDState, kinetic_energy
from longmd.models.base import predict
from longmd.neighbors import batched_neighbor_list

mace_modules = pytest.importorskip("mace.modules", reason="mace-torch is not installed")
from e3nn import o3  # noqa: E402  (installed with mace-torch)
from mace.calculators import MACECalculator  # noqa: E402

from longmd.models.mace import MACEModel, build_mace, load_mace  # noqa: E402
from longmd.models.potential import Potential  # noqa: E402

SPECIES = [1, 29, 79]


def _tiny_mace(r_max: float = 4.0) -> torch.nn.Module:
    torch.manual_seed(0)
    return mace_modules.ScaleShiftMACE(
        r_max=r_max, num_bessel=6, num_polynomial_cutoff=5, max_ell=2,
        interaction_cls=mace_modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=mace_modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        num_interactions=2, num_elements=len(SPECIES), hidden_irreps=o3.Irreps("8x0e + 8x1o"),
        MLP_irreps=o3.Irreps("8x0e"), atomic_energies=np.array([-1.0, -3.0, -2.5]), avg_num_neighbors=8.0,
        atomic_numbers=SPECIES, correlation=2, gate=torch.nn.functional.silu, atomic_inter_scale=1.3,
        atomic_inter_shift=0.1,
    ).double()


def _systems():
    alloy = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 1, 1)
    alloy.symbols[[0, 3]] = "Au"
    alloy.rattle(0.05, seed=1)
    water_like = molecule("CH4")
    water_like.symbols[0] = "Cu"  # an element MACE knows, in a non-periodic cluster
    water_like.rattle(0.05, seed=2)
    return [alloy, water_like]


@pytest.fixture(scope="module")
def mace_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("mace") / "tiny.model"
    torch.save(_tiny_mace(), path)
    return path


def _graph(atoms_list, cutoff: float) -> Graph:
    state = MDState.from_atoms(atoms_list, dtype=torch.float64)
    edges, shifts = batched_neighbor_list(state.positions, state.cell, state.pbc, state.system, cutoff)
    return Graph(state.positions, state.numbers, state.cell, state.system, edges, shifts)


def test_energies_and_forces_equal_mace_calculator(mace_file) -> None:
    model = load_mace(f"mace:{mace_file}")
    assert model.cutoff == pytest.approx(4.0)
    systems = _systems()
    out = predict(model, _graph(systems, model.cutoff + 1.0))  # a skin: pairs beyond r_max add nothing
    calc = MACECalculator(model_paths=str(mace_file), device="cpu", default_dtype="float64")
    start = 0
    for b, atoms in enumerate(systems):
        atoms = atoms.copy()
        atoms.calc = calc
        n = len(atoms)
        assert out.energy[b].item() == pytest.approx(atoms.get_potential_energy(), abs=1e-9)
        np.testing.assert_allclose(out.forces[start : start + n].numpy(), atoms.get_forces(), atol=1e-9)
        start += n


def test_nve_rollout_conserves_energy(mace_file) -> None:
    """Batched NVE MD of MACE through longmd's integrator and Verlet lists conserves the total energy."""
    model = MACEModel.from_file(mace_file)
    atoms = _systems()[0]
    state = thermalised([atoms, atoms], 300.0).to(dtype=torch.float64)
    result = md(model, state, 200, integrator("nve", 0.5), VerletNeighbors(model.cutoff, 0.5))
    kinetic = torch.stack([kinetic_energy(p, state.masses, state.system, 2) for p in result.momenta])
    total = torch.stack(result.energy) + kinetic  # (steps + 1, replicas)
    assert kinetic.std() > 1e-3  # atoms really moved
    assert (total - total[0]).abs().max() < 2e-3 * len(atoms) * 0.0259  # < 0.2% of kT per atom at 300 K


def test_rejects_unknown_elements_and_non_mace_files(mace_file, tmp_path) -> None:
    model = MACEModel.from_file(mace_file)
    oxygen = molecule("H2O")
    with pytest.raises(ValueError, match=r"knows elements \[1, 29, 79\], not \[8\]"):
        predict(model, _graph([oxygen], model.cutoff))
    with pytest.raises(FileNotFoundError, match="MACE model file not found"):
        MACEModel.from_file(tmp_path / "missing.model")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "linear.model")
    with pytest.raises(TypeError, match="not a MACE model"):
        MACEModel.from_file(tmp_path / "linear.model")


def test_build_mace_is_invariant_and_sized_by_channels() -> None:
    """mace_run_train-like defaults; energy invariant under rotation + translation of a periodic cell."""
    small, large = build_mace(SPECIES, channels=8), build_mace(SPECIES, channels=16)
    assert small.cutoff == 5.0 and small.n_parameters() < large.n_parameters()
    small.set_reference_energies({1: -1.0, 29: -3.0, 79: -2.0})  # longmd's reference energies add per atom
    atoms = _systems()[0]
    rotated = atoms.copy()
    rotated.rotate(37, "x", rotate_cell=True)
    rotated.rotate(-61, "z", rotate_cell=True)
    rotated.translate([0.3, -1.2, 2.0])
    model = small.double()
    a = predict(model, _graph([atoms], model.cutoff))
    b = predict(model, _graph([rotated], model.cutoff))
    assert a.energy.item() == pytest.approx(b.energy.item(), abs=1e-9)
    assert a.energy.abs().item() > 1e-6


def test_dynamic_training_of_mace_and_reload(emt_data, tmp_path) -> None:
    """``model.name: mace`` trains with DT (rollouts through MACE, double backward) and saves like the EGNN."""
    from longmd.models.io import load_model
    from longmd.training.trainer import train

    cfg = tiny_training_config(emt_data, tmp_path / "run", "model.name=mace", "model.options={channels: 4}",
                               "training.s_max=2", "training.max_epochs_per_s=2")
    result = train(cfg)
    assert [r["S"] for r in result.records] == [1, 1, 2, 2]
    assert all(np.isfinite(r["val_mepa"]) for r in result.records)
    assert result.records[-1]["val_mepa"] < result.records[0]["val_mepa"]  # it learns
    model = load_model(result.best_model)
    assert isinstance(model, Potential) and model.term("mace").hyperparameters()["channels"] == 4
    graph = _graph([_emt_atoms(emt_data)], model.cutoff)
    trainer_model = load_model(tmp_path / "run" / "best.pt")
    assert torch.equal(predict(model, graph).forces, predict(trainer_model, graph).forces)
    assert abs(predict(model, graph).energy.item() - _emt_atoms(emt_data).get_potential_energy()) < 1.0


def _emt_atoms(path):
    from ase.io import read

    return read(path, index=0)


def test_commands_open_mace_files_by_spec(mace_file) -> None:
    from longmd.evaluation.cli import load_models
    from longmd.models.io import open_model

    models = load_models([f"mace:{mace_file}"])
    assert list(models) == ["tiny"] and isinstance(models["tiny"], MACEModel)
    assert isinstance(open_model(f"mace:{mace_file}"), MACEModel)
    with pytest.raises(NotImplementedError, match="MACE's own file format"):
        models["tiny"].hyperparameters()


def test_a_format_1_mace_file_loads_as_a_potential(tmp_path) -> None:
    """The old save_model wrote class 'mace' with the MACEModel's keys ('module.*', 'reference.*')."""
    from longmd.models.io import load_model

    model = build_mace(SPECIES, channels=4).double()
    model.set_reference_energies({1: -1.0, 29: -3.0, 79: -2.0})
    hp = {"species": model.species, **model.term("mace").hyperparameters()}
    state = {k.removeprefix("terms.mace."): v for k, v in model.state_dict().items()}
    torch.save({"format_version": 1, "class": "mace", "hyperparameters": hp, "dtype": "float64", "metadata": "{}",
                "state_dict": state}, tmp_path / "old.pt")
    loaded = load_model(tmp_path / "old.pt")
    assert isinstance(loaded, Potential) and loaded.term_names == ["mace"]
    graph = _graph(_systems()[:1], model.cutoff)
    assert torch.equal(predict(model.eval(), graph).energy, predict(loaded, graph).energy)


def test_a_zero_readout_mace_term_adds_nothing_until_trained_and_then_learns() -> None:
    """For the last stage of a hierarchy (pair -> triplet -> MACE): the fresh term's energy and forces are exactly
    zero, it is skipped while frozen, and its gradients are not zero, so training moves it."""
    from longmd.models.registry import build_potential

    terms = [{"name": "pair", "options": {"cutoff": 3.0}},
             {"name": "mace", "preset": "small", "options": {"r_max": 4.0, "zero_readout": True}}]
    model = build_potential(SPECIES, terms).double()
    model.set_scale(0.5)
    with torch.no_grad():
        for p in model.term("pair").parameters():
            p.normal_(0.0, 0.3)
    mace = model.term("mace")
    assert mace.adds_nothing() and mace.hyperparameters()["zero_readout"] is True
    graph = _graph(_systems(), 4.0)
    pair_only = build_potential(SPECIES, terms[:1]).double()
    pair_only.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("terms.mace.")})
    a, b = predict(model, graph), predict(pair_only, graph)
    torch.testing.assert_close(a.energy, b.energy, rtol=0, atol=1e-12)
    torch.testing.assert_close(a.forces, b.forces, rtol=0, atol=1e-12)
    energy = model(graph).sum()
    grads = torch.autograd.grad(energy, [p for p in mace.parameters() if p.requires_grad], allow_unused=True)
    assert any(g is not None and float(g.abs().max()) > 0 for g in grads)
