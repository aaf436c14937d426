"""Potential = reference energies + named terms: the physics of a composed EGNN + Lennard-Jones potential, the
one-term EGNN bit for bit as the code before terms (33872b7), old files, and training one through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import make_supercell
from scipy.spatial.transform import Rotation

from longmd.models.base import predict
from longmd.models.egnn import egnn_potential
from longmd.models.io import load_model, save_model
from longmd.models.lj import LennardJones
from longmd.models.potential import Potential
from longmd.models.registry import build_potential
from test_egnn import graph_of, random_periodic

DATA = Path(__file__).parent / "data"
SRC = Path(__file__).parents[1] / "src"
SPECIES = [1, 6, 8]
REFERENCE = {1: -1.5, 6: -7.25, 8: -4.0}
LJ = {"epsilon": 0.05, "sigma": 1.0, "cutoff": 3.5, "r_switch": 3.0, "trainable": True}


def egnn_lj() -> Potential:
    model = build_potential(SPECIES, [
        {"name": "egnn", "options": {"hidden": 8, "n_rff": 6, "n_layers": 2, "cutoff": 3.0}},
        {"name": "lj", "options": LJ},
    ]).double()  # fmt: skip
    model.set_reference_energies(REFERENCE)
    model.set_scale(0.7)
    return model


def energy_forces(model, atoms_list: list[Atoms], cutoff: float = 3.5) -> tuple[np.ndarray, np.ndarray]:
    p = predict(model, graph_of(atoms_list, cutoff))
    return p.energy.numpy(), p.forces.numpy()


def unhex(values):
    return np.array([[float.fromhex(x) for x in row] for row in values]) if isinstance(values[0], list) else \
        np.array([float.fromhex(x) for x in values])


def test_one_egnn_term_is_bit_for_bit_the_egnn_of_33872b7() -> None:
    """Same seeded initial parameters (same RNG order), energies and forces, with tolerance 0 in float64."""
    old = json.loads((DATA / "egnn_33872b7.json").read_text())
    torch.manual_seed(0)
    model = egnn_potential(SPECIES, preset="small", seed=5).double()
    model.set_reference_energies(REFERENCE)
    model.set_scale(0.7)
    state = model.state_dict()
    for key, (total, first, last) in old["params"].items():
        new = state[key if key.startswith("reference.") else f"terms.egnn.{key}"]
        assert [float(new.sum()).hex(), float(new.flatten()[0]).hex(), float(new.flatten()[-1]).hex()] == \
            [total, first, last], key
    assert len(state) == len(old["params"])
    p = predict(model, graph_of([random_periodic(6, 1), random_periodic(5, 3)], cutoff=5.0))
    assert np.array_equal(p.energy.numpy(), unhex(old["energy"]))
    assert np.array_equal(p.forces.numpy(), unhex(old["forces"]))


def test_a_file_written_by_33872b7_loads_as_a_potential() -> None:
    old = json.loads((DATA / "egnn_33872b7.json").read_text())["old_file"]
    model = load_model(DATA / "egnn_33872b7.pt")
    assert isinstance(model, Potential) and model.term_names == ["egnn"] and model.species == [1, 8]
    assert model.reference.reference_energies() == {1: -1.25, 8: -3.5}
    atoms = random_periodic(5, 4)
    atoms.numbers[:] = [1, 8, 1, 8, 1]
    e, f = energy_forces(model, [atoms], cutoff=3.0)
    assert e[0] == float.fromhex(old["energy"]) and np.array_equal(f, unhex(old["forces"]))


def test_an_old_lennard_jones_file_loads(tmp_path) -> None:
    """Format 1 as the old save_model wrote it for LennardJones (state keys 'epsilon', 'sigma')."""
    hp = {"epsilon": 0.05, "sigma": 1.6, "cutoff": 3.5, "r_switch": 3.0, "trainable": False}
    f64 = torch.float64
    torch.save({"format_version": 1, "class": "lj", "hyperparameters": hp, "dtype": "float64", "metadata": "{}",
                "state_dict": {"epsilon": torch.tensor(0.05, dtype=f64), "sigma": torch.tensor(1.6, dtype=f64)}},
               tmp_path / "lj.pt")
    model = load_model(tmp_path / "lj.pt")
    assert isinstance(model, LennardJones)
    atoms = random_periodic(5)
    assert np.array_equal(energy_forces(model, [atoms])[0], energy_forces(LennardJones(**hp), [atoms])[0])


def test_energy_is_the_sum_of_the_terms_and_references() -> None:
    model = egnn_lj()
    assert model.term_names == ["egnn", "lj"] and model.cutoff == 3.5
    assert model.term("egnn").scaled and not model.term("lj").scaled
    atoms = random_periodic(6)
    graph = graph_of([atoms], cutoff=3.5)
    index = model.reference.index(graph.numbers)
    ref = sum(REFERENCE[int(z)] for z in atoms.numbers)
    with torch.no_grad():
        egnn = model.term("egnn")(graph.within(3.0), index).sum()
        lj = LennardJones(**LJ)(graph)[0]
        total = float(model(graph)[0])
    assert total == pytest.approx(float(0.7 * egnn + lj + ref), rel=1e-12)
    assert abs(float(lj)) > 1e-3  # the prior matters at these distances
    assert "lj" in model.summary() and "egnn" in model.summary()


def test_forces_are_minus_gradient_by_finite_differences() -> None:
    model = egnn_lj()
    atoms = random_periodic(5)
    _, forces = energy_forces(model, [atoms])
    h = 1e-5
    for a, c in [(0, 0), (2, 1), (4, 2)]:
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[a, c] += h
        minus.positions[a, c] -= h
        fd = -(energy_forces(model, [plus])[0][0] - energy_forces(model, [minus])[0][0]) / (2 * h)
        assert forces[a, c] == pytest.approx(fd, rel=1e-6, abs=1e-6)


def test_rotation_translation_permutation_invariance_and_periodic_images() -> None:
    model = egnn_lj()
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
    np.testing.assert_allclose(energy_forces(model, [shifted])[0], e0, rtol=1e-12)
    double = make_supercell(atoms, np.diag([2, 1, 1]))  # extensive: twice the atoms, twice the energy
    e3, f3 = energy_forces(model, [double])
    np.testing.assert_allclose(e3, 2 * e0, rtol=1e-12)
    np.testing.assert_allclose(f3[: len(atoms)], f0, atol=1e-10)


def test_batched_equals_one_by_one() -> None:
    model = egnn_lj()
    systems = [random_periodic(6, 1), random_periodic(4, 2), random_periodic(5, 3)]
    e, f = energy_forces(model, systems)
    one = [energy_forces(model, [s]) for s in systems]
    np.testing.assert_allclose(e, [o[0][0] for o in one], rtol=1e-12)
    np.testing.assert_allclose(f, np.concatenate([o[1] for o in one]), atol=1e-12)


def test_save_load_round_trip_is_bit_identical(tmp_path) -> None:
    model = egnn_lj()
    with torch.no_grad():
        model.term("lj").epsilon.mul_(1.3)  # as if trained: the file must keep the current ε
    loaded = load_model(save_model(model, tmp_path / "m.pt"))
    assert loaded.hyperparameters() == model.hyperparameters() and loaded.term_names == ["egnn", "lj"]
    atoms = [random_periodic(6)]
    e0, f0 = energy_forces(model, atoms)
    e1, f1 = energy_forces(loaded, atoms)
    assert np.array_equal(e0, e1) and np.array_equal(f0, f1)


def test_parameters_of_select_terms_by_name() -> None:
    model = egnn_lj()
    lj, egnn = model.parameters_of(["lj"]), model.parameters_of(["egnn"])
    assert {id(p) for p in lj} == {id(model.term("lj").epsilon), id(model.term("lj").sigma)}
    assert not {id(p) for p in lj} & {id(p) for p in egnn}
    assert {id(p) for p in lj + egnn} == {id(p) for p in model.parameters()}
    with pytest.raises(KeyError, match="no energy term 'zbl'"):
        model.parameters_of(["zbl"])


def test_egnn_plus_lj_trains_through_the_cli_and_reloads(emt_data, tmp_path) -> None:
    out = tmp_path / "run"
    terms = ("model.terms=[{name: egnn, preset: small, options: {hidden: 8, n_rff: 8, n_layers: 1}}, "
             "{name: lj, options: {epsilon: 0.02, sigma: 2.3, cutoff: 4.0, r_switch: 3.5, trainable: true}}]")
    sets = [terms, f"data.paths=[{emt_data}]", "data.split=time_blocks", "data.val_fraction=0.25",
            "data.test_fraction=0.25", "training.s_max=2", "training.max_epochs_per_s=1", "training.val_length=4",
            "training.val_windows=1", "training.windows_per_epoch=4", "training.batch_size=4",
            "training.progress=false", "training.dtype=float64"]
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "longmd", "train", "--out", str(out), *[a for s in sets for a in ("--set", s)]]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    model = load_model(out / "best.pt")
    assert isinstance(model, Potential) and model.term_names == ["egnn", "lj"] and model.species == [29, 79]
    assert float(model.term("lj").epsilon.detach()) != 0.02  # the prior's ε trained too
    atoms = random_periodic(6)
    atoms.numbers[:] = 29
    assert np.isfinite(energy_forces(model, [atoms], cutoff=5.0)[0]).all()
    sim = [sys.executable, "-m", "longmd", "simulate", str(out / "best.pt"), f"{emt_data}@0", "--steps", "20",
           "--replicas", "2", "--out", str(tmp_path / "md")]
    done = subprocess.run(sim, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "md" / "summary.json").read_text())
    assert summary["steps"] == 20 and summary["status"] == ["ok", "ok"]  # the composed potential simulates


def test_config_rejects_unknown_term_keys_and_mixed_forms() -> None:
    from longmd.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"model.terms\[0\]: unknown key 'optoins'"):
        load_config(None, ["model.terms=[{name: egnn, optoins: {}}]"])
    with pytest.raises(ConfigError, match="model.terms and model.preset both given"):
        load_config(None, ["model.terms=[{name: egnn}]", "model.preset=paper"])
    cfg = load_config(None, ["model.preset=paper", "model.three_body=null"])
    assert [t.as_dict() for t in cfg.model.term_list()] == [
        {"name": "egnn", "kind": "egnn", "preset": "paper", "options": {}}]


def test_three_body_adds_a_triplet_term_under_distance_only_architectures() -> None:
    from longmd.config import ConfigError, load_config

    def terms(*overrides: str) -> list[dict]:
        return [t.as_dict() for t in load_config(None, list(overrides)).model.term_list()]

    triplet = {"name": "triplet", "kind": "triplet", "preset": None, "options": {"hidden": 32, "cutoff": 3.0}}
    egnn = {"name": "egnn", "kind": "egnn", "preset": "small", "options": {}}
    assert terms("model.three_body=null") == [egnn]
    assert terms() == [triplet, egnn]  # the default: auto
    assert terms("model.three_body=auto") == [triplet, egnn]
    assert terms("model.three_body=auto", "model.name=schnet")[0] == triplet
    for name in ("mace", "painn", "stride_egnn"):  # they see angles (or have no energy terms): auto adds none
        assert [t["name"] for t in terms("model.three_body=auto", f"model.name={name}")] == [name]
    assert terms("model.three_body={cutoff: 2.5}", "model.name=mace")[0]["options"] == {"cutoff": 2.5}
    demo = load_config("demo")
    assert [t.name for t in demo.model.term_list()] == ["triplet", "egnn"]  # the default recipe
    assert [t.name for t in load_config("demo", ["model.name=mace"]).model.term_list()] == ["mace"]
    assert [t.name for t in load_config("demo", ["model.three_body=null"]).model.term_list()] == ["egnn"]
    assert [t.name for t in load_config("demo", ["model.terms=[{name: pair}]"]).model.term_list()] == ["pair"]
    with pytest.raises(ConfigError, match="model.terms and model.three_body both given.*three_body=null"):
        load_config(None, ["model.terms=[{name: egnn}]", "model.three_body={hidden: 8}"])
    with pytest.raises(ConfigError, match="override 'model.three_body=always': model.three_body must be auto"):
        load_config(None, ["model.three_body=always"])


def test_three_body_errors_name_the_key(emt_data, tmp_path) -> None:
    from conftest import tiny_training_config
    from longmd.config import ConfigError
    from longmd.training.trainer import Trainer

    with pytest.raises(ConfigError, match=r"model.three_body.hiden: not an option of triplet"):
        Trainer(tiny_training_config(emt_data, tmp_path / "a", "model.three_body={hiden: 8}"), log=lambda *_: None)
    with pytest.raises(ConfigError, match="model.three_body: triplet: hidden and envelope_p must be >= 1"):
        Trainer(tiny_training_config(emt_data, tmp_path / "b", "model.three_body={hidden: 0}"), log=lambda *_: None)


def test_a_run_stored_before_three_body_existed_resumes_as_it_ran(emt_data, tmp_path) -> None:
    """An old checkpoint's config has no model.three_body: it ran without a 3-body term, and so it resumes,
    although the key's default (auto) now adds one under the EGNN."""
    from conftest import tiny_training_config
    from longmd.atomic import atomic_torch_save
    from longmd.config import load_config
    from longmd.training.checkpoints import NAME, read_checkpoint
    from longmd.training.trainer import Trainer

    assert load_config(None).model.three_body == "auto"
    out = tmp_path / "run"
    Trainer(tiny_training_config(emt_data, out, "training.max_epochs=1"), log=lambda *_: None).run()
    state = read_checkpoint(out)
    del state["config"]["model"]["three_body"]  # as written before the key existed
    atomic_torch_save(state, out / NAME)
    lines: list[str] = []
    cfg = tiny_training_config(emt_data, out, "model.three_body=auto", "training.max_epochs=2")
    again = Trainer(cfg, resume=True, log=lines.append)
    assert again.model.term_names == ["egnn"]
    assert any("keeping the stored values of model.three_body" in line for line in lines)
    assert len(again.run().records) == 2


def test_a_stage_training_only_the_prior_leaves_the_egnn_bit_for_bit(emt_data, tmp_path) -> None:
    from conftest import tiny_training_config
    from longmd.training.trainer import Trainer

    terms = ("model.terms=[{name: egnn, options: {hidden: 8, n_rff: 8, n_layers: 1}}, "
             "{name: lj, options: {epsilon: 0.02, sigma: 2.3, cutoff: 4.0, r_switch: 3.5, trainable: true}}]")
    stage = "training.stages=[{name: prior, train: [lj], mode: conventional, max_epochs: 1}]"

    def trainer(out: str) -> Trainer:
        cfg = tiny_training_config(emt_data, tmp_path / out, "model.options={}", terms, stage,
                                   "training.batch_size=4", "training.val_windows=1")
        return Trainer(cfg, log=lambda *_: None)

    initial, trained = trainer("init").model, trainer("run")
    trained.run()
    for name in ("egnn", "lj"):
        same = [torch.equal(a, b) for a, b in zip(initial.parameters_of([name]),
                                                  trained.model.parameters_of([name]), strict=True)]
        assert all(same) if name == "egnn" else not all(same), name


def test_an_unknown_term_option_is_named_with_its_term() -> None:
    from longmd.config import ConfigError, load_config
    from longmd.training.setup import build_model

    cfg = load_config(None, ["model.terms=[{name: egnn, options: {hidden: 4}}, {name: lj, options: {sgima: 2}}]"])
    with pytest.raises(ConfigError, match=r"model.terms\[1\].options.sgima: not an option of lj"):
        build_model(cfg, [1])
    with pytest.raises(ConfigError, match=r"model.terms\[0\]: .*unknown preset 'huge'"):
        build_model(load_config(None, ["model.terms=[{name: egnn, preset: huge}]"]), [1])


def test_a_frozen_term_that_adds_nothing_is_skipped_and_a_trainable_one_is_not(monkeypatch) -> None:
    """A hierarchy's later terms start at zero: while frozen (earlier stages) they are not evaluated, which changes
    nothing (exactly zero energy and forces); once trainable they run, so their gradients exist."""
    model = build_potential([1, 6, 8], [{"name": "pair"}, {"name": "egnn", "preset": "small",
                                                          "options": {"zero_readout": True}}]).double()
    model.set_scale(0.7)
    with torch.no_grad():
        for p in model.term("pair").parameters():
            p.normal_(0.0, 0.3)
    assert model.term("egnn").adds_nothing() and not model.term("pair").adds_nothing()
    graph = graph_of([random_periodic(6)], cutoff=5.0)
    calls = []
    egnn = model.term("egnn")
    original = type(egnn).forward
    monkeypatch.setattr(type(egnn), "forward", lambda self, *a: (calls.append(1), original(self, *a))[1])
    trainable = predict(model, graph)
    assert calls  # trainable: evaluated
    egnn.requires_grad_(False)
    calls.clear()
    frozen = predict(model, graph)
    assert not calls  # frozen and zero: skipped
    assert torch.equal(frozen.energy, trainable.energy) and torch.equal(frozen.forces, trainable.forces)

