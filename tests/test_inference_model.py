"""The inference path (tabulated EGNN distance blocks) computes the model the training path does."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from ase.build import bulk

from longmd.calculator import atoms_to_graph
from longmd.models.base import predict
from longmd.models.egnn import egnn_potential
from longmd.models.inference import inference_model
from longmd.models.radial_table import RadialTable


def _graph(dtype):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    atoms.numbers[::3] = 79
    atoms.rattle(0.15, seed=1)
    return atoms_to_graph(atoms, 5.0, torch.device("cpu"), dtype)[0]


def _model(dtype, **hp):
    torch.manual_seed(0)
    model = egnn_potential([29, 79], "paper", **hp).to(dtype)
    model.set_scale(0.7)
    return model


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_tabulated_forces_stress_and_energy_equal_the_exact_path(dtype, tol):
    exact = _model(dtype, hidden=16, n_layers=2)
    fast, _ = inference_model(exact, dtype=dtype)
    assert fast is not exact and fast.terms["egnn"].tabulated and not exact.terms["egnn"].tabulated
    graph = _graph(dtype)
    a, b = predict(exact, graph, stress=True), predict(fast, graph, stress=True)
    scale = float(a.forces.abs().max())
    assert float((a.forces - b.forces).abs().max()) <= tol * scale
    assert float((a.energy - b.energy).abs()) <= tol * float(a.energy.abs())
    assert float((a.stress - b.stress).abs().max()) <= tol * float(a.stress.abs().max())


def test_the_table_matches_value_slope_and_curvature_at_its_nodes_and_is_smooth_between():
    f = [lambda d: torch.stack([torch.sin(3 * d), d**3], 1), lambda d: torch.stack([3 * torch.cos(3 * d), 3 * d**2], 1),
         lambda d: torch.stack([-9 * torch.sin(3 * d), 6 * d], 1)]
    nodes = torch.linspace(0, 2.0, 9, dtype=torch.float64)
    table = RadialTable.from_derivatives(*(g(nodes) for g in f), r_max=2.0)
    d = nodes[:-1].clone().requires_grad_(True)
    y = table(d)
    torch.testing.assert_close(y, f[0](nodes[:-1]), rtol=0, atol=1e-14)
    slope = torch.autograd.grad(y[:, 0].sum(), d)[0]
    torch.testing.assert_close(slope, f[1](nodes[:-1])[:, 0], rtol=0, atol=1e-12)
    x = torch.linspace(0.01, 1.99, 500, dtype=torch.float64)
    assert float((table(x)[:, 1] - x**3).abs().max()) < 1e-14  # a cubic is reproduced exactly by a quintic fit
    assert float((table(x)[:, 0] - torch.sin(3 * x)).abs().max()) < 1e-5  # h = 0.25: error ~ (3h)^6 / 6!


def test_the_small_preset_keeps_the_exact_path_and_the_caller_model_is_never_changed():
    small = egnn_potential([29, 79], "small").double()
    same, dtype = inference_model(small)
    assert same is small and dtype == torch.float64 and not small.terms["egnn"].tabulated
    paper = _model(torch.float64, hidden=16, n_layers=1)
    before = copy.deepcopy(paper.state_dict())
    fast, _ = inference_model(paper, dtype=torch.float32)
    assert next(fast.parameters()).dtype == torch.float32 and next(paper.parameters()).dtype == torch.float64
    for key, value in paper.state_dict().items():
        assert torch.equal(value, before[key])
    assert set(fast.state_dict()) == set(paper.state_dict())  # tables are not saved with the weights


def test_simulate_and_the_calculator_use_the_table(tmp_path):
    from longmd.calculator import LongMDCalculator

    model = _model(torch.float64, hidden=16, n_layers=1)
    calc = LongMDCalculator(model)
    assert calc.model.terms["egnn"].tabulated
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    atoms.rattle(0.1, seed=2)
    atoms.calc = calc
    exact = predict(model, atoms_to_graph(atoms, 5.0, torch.device("cpu"), torch.float64)[0])
    np.testing.assert_allclose(atoms.get_forces(), exact.forces.numpy(), rtol=0,
                               atol=1e-10 * float(exact.forces.abs().max()))
