"""Loss formulas against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from longmd.training.losses import LossSettings, sequence_loss


def _h_poor() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """2 H atoms with error 1 eV/Å on every component, 4 C atoms with none."""
    numbers = torch.tensor([1, 1, 6, 6, 6, 6])
    ref = torch.zeros(6, 3, dtype=torch.float64)
    pred = ref.clone()
    pred[:2] = 1.0
    return pred, ref, numbers


@pytest.mark.parametrize(
    ("kind", "reduction", "expected"),
    [("mepa", "sum", 1.0), ("mepa", "mean", 0.5), ("mae", "sum", 1.0 / 3.0), ("mse", "sum", 1.0 / 3.0)],
)
def test_single_frame_force_term(kind: str, reduction: str, expected: float) -> None:
    pred, ref, numbers = _h_poor()
    settings = LossSettings(kind=kind, species_reduction=reduction, energy_weight=0.0)
    loss, parts = sequence_loss([pred], ref[None], numbers, settings)
    assert loss.item() == pytest.approx(expected)
    assert parts["force_0"] == pytest.approx(expected)


def test_mepa_and_mae_differ_on_h_poor_system() -> None:
    """MEPA gives the 2 H atoms the weight of a whole species; plain MAE lets the C atoms drown them."""
    pred, ref, numbers = _h_poor()
    mepa_loss, _ = sequence_loss([pred], ref[None], numbers, LossSettings("mepa", energy_weight=0.0))
    mae_loss, _ = sequence_loss([pred], ref[None], numbers, LossSettings("mae", energy_weight=0.0))
    assert mepa_loss.item() == pytest.approx(3 * mae_loss.item())


def test_energy_term_is_per_atom() -> None:
    pred, ref, numbers = _h_poor()
    energy, ref_energy, n_atoms = torch.tensor([3.0]), torch.tensor([0.0]), torch.tensor([6])
    settings = LossSettings("mepa", energy_weight=2.0)
    loss, parts = sequence_loss([pred], ref[None], numbers, settings, energy, ref_energy, n_atoms)
    assert parts["energy"] == pytest.approx(0.5)
    assert loss.item() == pytest.approx(1.0 + 2.0 * 0.5)
    mse, parts = sequence_loss([pred], ref[None], numbers, LossSettings("mse"), energy, ref_energy, n_atoms)
    assert parts["energy"] == pytest.approx(0.25)
    assert mse.item() == pytest.approx(1.0 / 3.0 + 0.25)


def test_rollout_loss_weights_first_step_and_drops_energy() -> None:
    pred, ref, numbers = _h_poor()
    forces = [pred, 2 * pred, 3 * pred]  # MEPA 1, 2, 3
    refs = torch.stack([ref, ref, ref])
    energy = torch.tensor([100.0])
    loss, parts = sequence_loss(forces, refs, numbers, LossSettings("mepa"), energy, torch.zeros(1), torch.tensor([6]))
    assert loss.item() == pytest.approx(50 * 1 + 2 + 3)
    assert "energy" not in parts
    loss, _ = sequence_loss(forces, refs, numbers, LossSettings("mepa", first_step_weight=1.0, force_weight=2.0))
    assert loss.item() == pytest.approx(2 * (1 + 2 + 3))


def test_loss_is_differentiable_and_rejects_unknown_kind() -> None:
    pred, ref, numbers = _h_poor()
    pred.requires_grad_(True)
    loss, _ = sequence_loss([pred], ref[None], numbers, LossSettings("mepa", energy_weight=0.0))
    loss.backward()
    # d/dF of the H MAE: sign(err) / (3 * 2 atoms) on each H component; C components have zero error.
    assert torch.allclose(pred.grad[:2], torch.full((2, 3), 1 / 6, dtype=torch.float64))
    with pytest.raises(ValueError, match="unknown loss 'huber'"):
        LossSettings("huber")


def test_mse_is_the_inductive_bias_papers_loss() -> None:
    """p_e * mean over systems of the squared per-atom energy error + p_f * mean squared force component error,
    on two systems of 2 and 4 atoms, by hand."""
    numbers = torch.tensor([14, 6, 14, 14, 6, 6])
    ref = torch.zeros(6, 3, dtype=torch.float64)
    pred = ref.clone()
    pred[0, 0], pred[3, 2] = 0.3, -0.6  # squared errors 0.09 + 0.36 over 18 components
    energy, ref_energy, n_atoms = torch.tensor([1.0, -2.0]), torch.tensor([0.2, -1.0]), torch.tensor([2, 4])
    settings = LossSettings("mse", energy_weight=0.1, force_weight=2.0)
    loss, parts = sequence_loss([pred], ref[None], numbers, settings, energy, ref_energy, n_atoms)
    per_atom = ((0.8 / 2) ** 2 + (1.0 / 4) ** 2) / 2  # (0.16 + 0.0625) / 2
    assert parts["energy"] == pytest.approx(per_atom)
    assert parts["force_0"] == pytest.approx(0.45 / 18)
    assert loss.item() == pytest.approx(0.1 * 0.11125 + 2.0 * 0.025)
