"""Training a stride predictor: gradients through chains of strides, the CLI run, exact resume."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from conftest import thermalised, tiny_training_config, train_killed_in_epoch
from longmd.dynamics.cores import LearnedStride
from longmd.dynamics.neighbor_policy import GivenNeighbors
from longmd.dynamics.propagator import build_integrator
from longmd.dynamics.rollout import rollout
from longmd.models.io import load_model
from longmd.models.stride_egnn import EquivariantStride
from longmd.neighbors import batched_neighbor_list
from longmd.training.trainer import Trainer
from test_stride_predictor import alloy, predictor


def chain_loss(model, state, edges, n_strides: int) -> torch.Tensor:
    """Sum over strides of a fixed weighting of positions and momenta along a chain through the predictor."""
    core = LearnedStride(model, GivenNeighbors([edges] * (n_strides + 1)), gradient="full")
    out = rollout(build_integrator(core, model.timestep_fs), state, n_strides)
    w = torch.linspace(-1.0, 1.0, 3 * state.n_atoms, dtype=torch.float64).reshape(-1, 3)
    return sum((w * out.positions[s]).sum() + 10.0 * (w * out.momenta[s]).sum() for s in range(1, n_strides + 1))


def test_the_gradient_through_a_chain_of_strides_matches_finite_differences():
    model = predictor(seed=2)
    state = thermalised([alloy(3)], 900.0)
    edges = batched_neighbor_list(state.positions, state.cell, state.pbc, state.system, model.cutoff + 1.0)
    loss = chain_loss(model, state, edges, 3)
    params = [model.edge_head.weight, model.node_head.bias, model.layers[0].message[0].weight]
    grads = torch.autograd.grad(loss, params)
    for p, g in zip(params, grads, strict=True):
        index = (0, 1) if p.dim() == 2 else (1,)
        eps = 1e-6
        with torch.no_grad():
            p[index] += eps
            up = chain_loss(model, state, edges, 3)
            p[index] -= 2 * eps
            down = chain_loss(model, state, edges, 3)
            p[index] += eps
        fd = (up - down) / (2 * eps)
        assert float(g[index]) == pytest.approx(float(fd), rel=1e-6, abs=1e-9)
        assert abs(float(g[index])) > 1e-6  # the chain really depends on it


STRIDE = ("model.name=stride_egnn", "model.stride_fs=8.0", "model.options={hidden: 8, n_layers: 1, n_rbf: 8}",
          "training.loss=mse", "training.position_weight=1", "training.momentum_weight=1", "training.s_max=3",
          "training.max_epochs_per_s=2", "training.batch_size=4", "training.val_windows=2", "training.val_length=3",
          "data.split=trajectory")


def test_stride_training_runs_multi_stride_curriculum_and_resumes_exactly(emt_data, tmp_path, monkeypatch):
    full = Trainer(tiny_training_config(emt_data, tmp_path / "full", *STRIDE), log=lambda *_: None)
    result = full.run()
    assert [r["S"] for r in result.records] == [2, 2, 3, 3]  # K = 1 then 2 strides
    assert all(r["val_position_dev_A"] > 0 and r["val_momentum_dev"] > 0 for r in result.records)
    best = load_model(tmp_path / "full" / "best.pt")
    assert isinstance(best, EquivariantStride) and best.timestep_fs == 8.0
    assert float(best.q_scale.min()) > 0 and not torch.allclose(best.q_scale, torch.ones_like(best.q_scale))
    split = json.loads((tmp_path / "full" / "split.json").read_text())
    assert split["n_traj"] == 4  # the split of the files' trajectories, not of the derived ones

    train_killed_in_epoch(tiny_training_config(emt_data, tmp_path / "killed", *STRIDE), 2, monkeypatch)
    resumed = Trainer(tiny_training_config(emt_data, tmp_path / "killed", *STRIDE), resume=True, log=lambda *_: None)
    resumed.run()
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_a_stride_that_is_not_a_multiple_of_the_data_timestep_is_refused(emt_data, tmp_path):
    from longmd.config import ConfigError

    cfg = tiny_training_config(emt_data, tmp_path / "run", *STRIDE, "model.stride_fs=5.0")
    with pytest.raises(ConfigError, match=r"model.stride_fs: a stride of 5.0 fs is not a multiple of the data.s "
                       r"timestep 2.0 fs"):
        Trainer(cfg, log=lambda *_: None)


def test_train_stride_from_the_command_line(emt_data, tmp_path):
    out = tmp_path / "cli"
    args = [sys.executable, "-m", "longmd", "train", "stride", "--out", str(out), "--set", f"data.paths=[{emt_data}]",
            "--set", "model.stride_fs=8.0", "--set", "model.options={hidden: 8, n_layers: 1}", "--set",
            "training.max_epochs=1", "--set", "training.windows_per_epoch=4", "--set", "training.val_length=3",
            "--set", "training.val_windows=2", "--set", "data.split=time_blocks", "--set", "data.val_fraction=0.25",
            "--set", "data.test_fraction=0"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "stride 8.0 fs = 4 frames of 2.0 fs" in done.stdout and "time-reversed" in done.stdout
    assert isinstance(load_model(out / "best.pt"), EquivariantStride)


def test_a_companion_puts_the_energy_of_the_predicted_states_into_the_validation_metric(emt_data, tmp_path):
    cfg = tiny_training_config(emt_data, tmp_path / "run", *STRIDE, "training.max_epochs=1",
                               "training.companion=ase:ase.calculators.emt:EMT")
    result = Trainer(cfg, log=lambda *_: None).run()
    record = result.records[0]
    energy = record["val_energy_dev_eV_per_atom"]
    assert energy is not None and energy > 0  # free flight-ish predictions break EMT's total energy
    product = record["val_position_dev_A"] * record["val_momentum_dev"] * energy
    assert record["val_mepa"] == pytest.approx(product, rel=1e-12)


def test_the_energy_error_of_exact_states_is_zero(emt_data):
    """The reference's own next states, scored by the reference potential, have no energy error: velocity
    Verlet with EMT stands in for a perfect predictor (rollout_errors scores any model's states alike)."""
    from longmd.analysis.rollout_test import rollout_errors
    from longmd.data.windows import Window
    from longmd.io.read import read_trajectories
    from longmd.models.ase_adapter import ASECalculatorModel

    trajectories = read_trajectories(emt_data)
    emt = ASECalculatorModel.from_spec("ase:ase.calculators.emt:EMT")
    errors = rollout_errors(emt, trajectories, [Window(0, 0, 5), Window(1, 3, 5)], dtype=torch.float64,
                            energy_model=emt)
    assert errors.mean_energy_deviation < 1e-6
