"""MEPA and force/energy errors on hand-made arrays with hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from longmd.analysis.force_errors import (
    energy_mae_per_atom,
    energy_rmse_per_atom,
    force_error_summary,
    force_mae,
    force_rmse,
    mepa,
    mepa_per_step,
    per_species_force_mae,
    per_species_force_rmse,
)

NUMBERS = torch.tensor([1, 6, 6])
# errors pred - ref: H atom |.| = 0.3, 0.3, 0.6 -> MAE 0.4; C atoms 0.1, 0, 0.2, 0, 0.3, 0 -> MAE 0.1
ERR = torch.tensor([[0.3, -0.3, 0.6], [0.1, 0.0, 0.2], [0.0, -0.3, 0.0]], dtype=torch.float64)
REF = torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.5, 0.0], [0.2, 0.2, 0.2]], dtype=torch.float64)


def test_per_species_mae_and_rmse_by_hand() -> None:
    species, mae = per_species_force_mae(REF + ERR, REF, NUMBERS)
    assert species == [1, 6]
    assert torch.allclose(mae, torch.tensor([0.4, 0.1], dtype=torch.float64))
    _, rmse = per_species_force_rmse(REF + ERR, REF, NUMBERS)
    expected = [math.sqrt((0.09 + 0.09 + 0.36) / 3), math.sqrt((0.01 + 0.04 + 0.09) / 6)]
    assert torch.allclose(rmse, torch.tensor(expected, dtype=torch.float64))


def test_mepa_sum_and_mean() -> None:
    assert float(mepa(REF + ERR, REF, NUMBERS)) == pytest.approx(0.5)
    assert float(mepa(REF + ERR, REF, NUMBERS, species_reduction="mean")) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        mepa(REF + ERR, REF, NUMBERS, species_reduction="max")  # type: ignore[arg-type]


def test_h_poor_system_mepa_differs_from_plain_mae() -> None:
    numbers = np.array([1, 1] + [6] * 49)
    ref = np.random.default_rng(0).normal(size=(51, 3))
    err = np.full((51, 3), 0.1)
    err[:2] = -1.0  # each H component off by 1 eV/Å, each C component by 0.1
    pred = ref + err
    assert float(mepa(pred, ref, numbers)) == pytest.approx(1.1)
    assert float(mepa(pred, ref, numbers, species_reduction="mean")) == pytest.approx(0.55)
    assert float(force_mae(pred, ref)) == pytest.approx((6 * 1.0 + 147 * 0.1) / 153)


def test_per_step_rollout_and_absent_species() -> None:
    pred = torch.stack([REF + ERR, REF])  # step 0 with errors, step 1 exact
    ref = torch.stack([REF, REF])
    species, per_species = per_species_force_mae(pred, ref, NUMBERS, species=[1, 6, 46])
    assert per_species.shape == (2, 3)
    assert torch.isnan(per_species[:, 2]).all()  # no Pd atom
    assert torch.allclose(per_species[:, :2], torch.tensor([[0.4, 0.1], [0.0, 0.0]], dtype=torch.float64))
    steps = mepa_per_step(pred, ref, NUMBERS, species=[1, 6, 46])
    assert torch.allclose(steps, torch.tensor([0.5, 0.0], dtype=torch.float64))
    assert float(mepa(pred, ref, NUMBERS, species=[1, 6, 46])) == pytest.approx(0.25)
    mean_steps = mepa_per_step(pred, ref, NUMBERS, species=[1, 6, 46], species_reduction="mean")
    assert torch.allclose(mean_steps, torch.tensor([0.25, 0.0], dtype=torch.float64))


def test_gradients_flow_through_mepa() -> None:
    pred = (REF + ERR).clone().requires_grad_(True)
    mepa(pred, REF, NUMBERS).backward()
    # d MEPA / d pred_ic = sign(err_ic) / (3 * n_species(i))
    expected = torch.sign(ERR) / torch.tensor([3.0, 6.0, 6.0], dtype=torch.float64)[:, None]
    assert torch.allclose(pred.grad, expected)
    assert torch.isfinite(pred.grad).all()


def test_gradients_finite_with_absent_species_float32() -> None:
    pred = (REF + ERR).float().requires_grad_(True)
    loss = mepa(pred, REF.float(), NUMBERS, species=[1, 6, 46], species_reduction="mean")
    loss.backward()
    assert loss.dtype == torch.float32
    assert torch.isfinite(pred.grad).all()


def test_plain_force_and_energy_errors() -> None:
    assert float(force_mae(REF + ERR, REF)) == pytest.approx(1.8 / 9)
    assert float(force_rmse(REF + ERR, REF)) == pytest.approx(math.sqrt(0.68 / 9))
    pred_e, ref_e = np.array([1.0, 2.0]), np.array([0.0, 0.0])
    assert float(energy_mae_per_atom(pred_e, ref_e, [2, 8])) == pytest.approx(0.375)
    assert float(energy_rmse_per_atom(pred_e, ref_e, [2, 8])) == pytest.approx(math.sqrt(0.15625))
    assert float(energy_mae_per_atom(pred_e, ref_e, 2)) == pytest.approx(0.75)


def test_summary_is_plain_floats() -> None:
    summary = force_error_summary(REF + ERR, REF, NUMBERS)
    assert summary["mepa_sum"] == pytest.approx(0.5)
    assert summary["mepa_mean"] == pytest.approx(0.25)
    assert summary["force_mae_per_species"] == pytest.approx({1: 0.4, 6: 0.1})
    rollout = force_error_summary(torch.stack([REF + ERR, REF]), torch.stack([REF, REF]), NUMBERS)
    assert rollout["force_mae_per_species"] == pytest.approx({1: 0.2, 6: 0.05})
    assert rollout["force_rmse_per_species"][1] == pytest.approx(math.sqrt(0.54 / 6))


def test_shape_errors() -> None:
    with pytest.raises(ValueError):
        mepa(REF, REF[:2], NUMBERS)
    with pytest.raises(ValueError):
        mepa(REF, REF, NUMBERS[:2])
