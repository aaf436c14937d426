"""Saved models: one plain file, ``torch.load(weights_only=True)``, identical outputs after loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk

from longmd.calculator import atoms_to_graph
from longmd.models.base import predict
from longmd.models.egnn import egnn_potential
from longmd.models.io import MODEL_CLASSES, load_metadata, load_model, save_model
from longmd.models.potential import Potential


def _graph(dtype: torch.dtype = torch.float64):
    atoms = bulk("NaCl", "rocksalt", a=4.0) * (2, 1, 1)
    atoms.rattle(0.05, seed=0)
    graph, _ = atoms_to_graph(atoms, 3.0, torch.device("cpu"), dtype)
    return graph


def _model(**kw) -> Potential:
    model = egnn_potential([11, 17], hidden=8, n_rff=6, n_layers=2, cutoff=3.0, seed=7, **kw)
    model.set_reference_energies({11: -1.3, 17: -2.7})
    model.set_scale(0.4)
    return model


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_save_load_gives_identical_outputs(tmp_path, dtype: torch.dtype) -> None:
    model = _model().to(dtype)
    path = save_model(model, tmp_path / "sub" / "model.pt", metadata={"trained_steps": 3})
    payload = torch.load(path, weights_only=True, map_location="cpu")
    assert payload["class"] == "potential" and payload["hyperparameters"] == model.hyperparameters()
    assert not list(tmp_path.glob("sub/.*.tmp"))  # atomic write leaves no temporary file
    loaded = load_model(path)
    assert isinstance(loaded, Potential) and loaded.term_names == ["egnn"] and not loaded.training
    assert next(loaded.parameters()).dtype == dtype
    graph = _graph(dtype)
    p0, p1 = predict(model, graph, stress=True), predict(loaded, graph, stress=True)
    assert torch.equal(p0.energy, p1.energy) and torch.equal(p0.forces, p1.forces)
    assert torch.equal(p0.stress, p1.stress)
    assert loaded.reference.reference_energies() == pytest.approx({11: -1.3, 17: -2.7})
    assert load_metadata(path) == {"trained_steps": 3}


def test_hard_cutoff_model_round_trip(tmp_path) -> None:
    model = _model(envelope="none").double()
    loaded = load_model(save_model(model, tmp_path / "m.pt"))
    assert loaded.term("egnn").hyperparameters()["envelope"] == "none"
    graph = _graph()
    assert torch.equal(predict(model, graph).forces, predict(loaded, graph).forces)


def test_lennard_jones_registered_and_round_trips(tmp_path) -> None:
    if "lj" not in MODEL_CLASSES:
        pytest.skip("models/lj.py not available")
    model = MODEL_CLASSES["lj"](epsilon=0.01, sigma=2.0, cutoff=3.0)
    loaded = load_model(save_model(model, tmp_path / "lj.pt"))
    graph = _graph()
    np.testing.assert_allclose(predict(loaded, graph).energy, predict(model, graph).energy, rtol=1e-14)


def test_load_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_model(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_text("not a model")
    with pytest.raises(ValueError, match="junk.pt"):
        load_model(junk)
    torch.save({"class": "transformer", "hyperparameters": {}, "state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="unknown model class 'transformer'"):
        load_model(tmp_path / "other.pt")
    path = save_model(_model(), tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    payload["state_dict"].pop("terms.egnn.embedding.weight")
    payload.pop("sha256")
    torch.save(payload, path)
    with pytest.raises(ValueError, match="cannot rebuild potential"):
        load_model(path)


def test_unregistered_class_cannot_be_saved(tmp_path) -> None:
    class Custom(Potential):
        pass

    model = egnn_potential([1], hidden=4, n_rff=2, n_layers=1)
    with pytest.raises(TypeError, match="not one of MODEL_CLASSES"):
        save_model(Custom(model.reference, dict(model.terms)), tmp_path / "c.pt")


def test_a_foreign_torch_file_gives_one_line(tmp_path) -> None:
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pt")
    with pytest.raises(ValueError) as info:
        load_model(tmp_path / "module.pt")
    message = str(info.value)
    assert message == f"{tmp_path / 'module.pt'}: not a longmd model file (it pickles torch.nn.modules.linear.Linear)"


def test_flipped_bit_in_the_weights_is_refused_and_old_files_still_load(tmp_path) -> None:
    model = _model()
    path = save_model(model, tmp_path / "m.pt")
    weight = model.state_dict()["terms.egnn.embedding.weight"].detach().contiguous().numpy().tobytes()
    raw = bytearray(path.read_bytes())
    at = bytes(raw).find(weight)
    assert at >= 0  # torch stores tensors uncompressed
    raw[at + len(weight) // 2] ^= 0x10  # one bit of one weight
    bad = tmp_path / "bad.pt"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"bad.pt: corrupt model file"):
        load_model(bad)
    payload = torch.load(path, weights_only=True)
    payload.pop("sha256")  # a file written before checksums existed
    torch.save(payload, tmp_path / "old.pt")
    g = _graph(torch.float32)
    assert torch.equal(predict(load_model(tmp_path / "old.pt"), g).energy, predict(model.eval(), g).energy)
