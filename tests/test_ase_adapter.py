"""The ASE adapter: spec parsing, clear errors, forces/stress equal the calculator's, and MD through it equals
ASE's own velocity Verlet."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import bulk, molecule
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from ase.md.verlet import VelocityVerlet

from conftest import integrator, md
from longmd.calculator import atoms_to_graph
from longmd.data.graph import Graph
from longmd.dynamics.neighbor_policy import VerletNeighbors
from longmd.dynamics.state import MDState
from longmd.models.ase_adapter import ASECalculatorModel, ModelSpecError, calculator_from_spec, parse_ase_spec
from longmd.models.base import predict
from longmd.models.io import save_model
from longmd.neighbors import batched_neighbor_list

EMT_SPEC = "ase:ase.calculators.emt:EMT"


def make_emt() -> EMT:
    """A module-level factory: specs may name any callable that returns a calculator."""
    return EMT()


def _alloy(seed: int = 1) -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 1)
    atoms.symbols[[0, 5]] = "Au"
    atoms.rattle(0.05, seed=seed)
    return atoms


def _graph(atoms_list: list[Atoms], cutoff: float = 5.0) -> Graph:
    state = MDState.from_atoms(atoms_list)
    edges, shifts = batched_neighbor_list(state.positions, state.cell, state.pbc, state.system, cutoff)
    return Graph(state.positions, state.numbers, state.cell, state.system, edges, shifts)


def test_spec_values_are_yaml_scalars() -> None:
    spec = "ase:mace.calculators:MACECalculator?model_paths=x.model&device=cpu&n=3&r=4.5&ok=true&l=[1,2]&s='7'"
    module, name, kwargs = parse_ase_spec(spec)
    assert (module, name) == ("mace.calculators", "MACECalculator")
    assert kwargs == {"model_paths": "x.model", "device": "cpu", "n": 3, "r": 4.5, "ok": True, "l": [1, 2], "s": "7"}
    assert parse_ase_spec(EMT_SPEC) == ("ase.calculators.emt", "EMT", {})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("ase.calculators.emt:EMT", "must start with 'ase:'"),
        ("ase:EMT", "expected ase:module.path:Name"),
        ("ase:ase.calculators.emt:", "expected ase:module.path:Name"),
        ("ase:no_such_package_xyz.calc:Calc", "cannot import 'no_such_package_xyz.calc'"),
        ("ase:ase.calculators.emt:NoSuchCalc", "has no attribute 'NoSuchCalc'"),
        ("ase:numpy:zeros?bogus_keyword=1", "failed"),
        ("ase:builtins:dict", "not an ASE calculator"),
        ("ase:ase.calculators.emt:EMT?x=[1,", "cannot parse the value of 'x'"),
    ],
)
def test_bad_specs_give_clear_errors(spec: str, message: str) -> None:
    with pytest.raises(ModelSpecError, match=message) as info:
        ASECalculatorModel.from_spec(spec)
    assert isinstance(info.value, ValueError)  # the CLI prints ValueErrors as one line
    assert spec[:20] in str(info.value) or "must start" in str(info.value)


def test_a_factory_function_is_accepted() -> None:
    assert isinstance(calculator_from_spec(f"ase:{__name__}:make_emt"), EMT)
    model = ASECalculatorModel(make_emt)  # a callable, called lazily once
    atoms = _alloy()
    out = predict(model, _graph([atoms]))
    atoms.calc = EMT()
    assert out.energy.item() == pytest.approx(atoms.get_potential_energy(), abs=1e-12)


def test_energy_forces_stress_equal_the_calculator() -> None:
    atoms = _alloy()
    model = ASECalculatorModel.from_spec(EMT_SPEC, pbc=True)
    graph, _ = atoms_to_graph(atoms, model.cutoff, torch.device("cpu"), torch.float64)
    out = predict(model, graph, stress=True)
    atoms.calc = EMT()
    assert out.energy.item() == pytest.approx(atoms.get_potential_energy(), abs=1e-12)
    np.testing.assert_allclose(out.forces.numpy(), atoms.get_forces(), atol=1e-12)
    np.testing.assert_allclose(out.stress[0].numpy(), atoms.get_stress(voigt=False), atol=1e-12)


def test_batches_of_different_systems_and_inferred_pbc() -> None:
    periodic, free = _alloy(), molecule("CH4")  # a molecule without a cell: pbc inferred False
    free.symbols[:] = "Cu"
    free.positions *= 2.0
    model = ASECalculatorModel(EMT())
    out = predict(model, _graph([periodic, free]))
    for k, atoms in enumerate((periodic, free)):
        atoms.calc = EMT()
        assert out.energy[k].item() == pytest.approx(atoms.get_potential_energy(), abs=1e-12)
    np.testing.assert_allclose(out.forces[len(periodic) :].numpy(), free.get_forces(), atol=1e-12)
    assert model.calls == 2


def test_md_through_the_adapter_equals_ase_velocity_verlet() -> None:
    atoms = _alloy()
    rng = np.random.default_rng(0)
    atoms.set_momenta(rng.normal(scale=0.5, size=(len(atoms), 3)))
    state = MDState.from_atoms(atoms)
    model = ASECalculatorModel(EMT(), pbc=True)
    result = md(model, state, 20, integrator("nve", 2.0), VerletNeighbors(model.cutoff, 1.0))
    atoms.calc = EMT()
    dyn = VelocityVerlet(atoms, timestep=2.0 * units.fs)
    dyn.run(20)
    np.testing.assert_allclose(result.state.positions.numpy(), atoms.positions, atol=1e-10)
    np.testing.assert_allclose(result.state.momenta.numpy(), atoms.get_momenta(), atol=1e-10)


def test_no_double_backward_and_no_saving(tmp_path) -> None:
    model = ASECalculatorModel(EMT())
    out = predict(model, _graph([_alloy()]), create_graph=True)
    with pytest.raises(RuntimeError):
        out.forces.sum().backward()  # forces are the calculator's numbers: no second derivative exists
    with pytest.raises((NotImplementedError, TypeError)):
        save_model(model, tmp_path / "x.pt")


class _TorchSpring(Calculator):
    """E = 0.1 sum |x|^2 with forces by torch.autograd, without enabling grad (as CHGNet's calculator does)."""

    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=None, system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        x = torch.tensor(self.atoms.positions, requires_grad=True)
        energy = 0.1 * (x * x).sum()
        (grad,) = torch.autograd.grad(energy, x)
        self.results = {"energy": float(energy.detach()), "forces": -grad.numpy()}


def test_calculators_that_use_autograd_inside_work() -> None:
    """MACE and CHGNet take forces by torch autograd inside the calculator: the adapter must allow it."""
    atoms = _alloy()
    out = predict(ASECalculatorModel(_TorchSpring()), _graph([atoms]))
    np.testing.assert_allclose(out.forces.numpy(), -0.2 * atoms.positions, atol=1e-12)
