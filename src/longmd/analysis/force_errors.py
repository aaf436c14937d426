"""Force and energy errors, in torch and differentiable: the one definition of MEPA.

Forces are compared component by component (eV/Å). Per-species errors are taken over the atoms of each
species; MEPA combines them over species (``"sum"`` by default, as the DT authors' code does, so that 2 H
atoms weigh as much as 49 C atoms) and, for rollouts, averages over steps. See ``docs/analysis.md``.

Every function accepts tensors or array-likes; inputs that are not tensors are converted to float64.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

SpeciesReduction = Literal["sum", "mean"]


def _as_tensor(x: Tensor | Sequence | object, dtype: torch.dtype | None = None) -> Tensor:
    if isinstance(x, Tensor):
        return x if dtype is None else x.to(dtype)
    return torch.as_tensor(x, dtype=dtype if dtype is not None else torch.float64)


def _check_forces(pred: Tensor, ref: Tensor, numbers: Tensor) -> None:
    if pred.shape != ref.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and ref {tuple(ref.shape)} differ in shape")
    if pred.dim() not in (2, 3) or pred.shape[-1] != 3:
        raise ValueError(f"forces must have shape (N, 3) or (S, N, 3), got {tuple(pred.shape)}")
    if numbers.dim() != 1 or numbers.shape[0] != pred.shape[-2]:
        raise ValueError(f"numbers must have shape ({pred.shape[-2]},), got {tuple(numbers.shape)}")


@functools.lru_cache(maxsize=64)
def _species_table(species: tuple[int, ...], device: torch.device) -> Tensor:
    """The species as a tensor on ``device``, copied there once (a copy to a GPU waits for its queued work).
    Shared: never modify it."""
    return torch.tensor(species, device=device, dtype=torch.long)


def _species_reduce(
    err: Tensor, numbers: Tensor, species: Sequence[int] | None, power: int
) -> tuple[list[int], Tensor, Tensor]:
    """Mean of |err|**power over the components of each species' atoms.

    Returns (species list, means (..., n_species) with 0 where a species has no atom, present mask).
    """
    numbers = numbers.to(err.device).long()
    species_list = sorted({int(z) for z in numbers.tolist()}) if species is None else [int(z) for z in species]
    table = _species_table(tuple(species_list), err.device)
    onehot = (numbers[:, None] == table[None, :]).to(err.dtype)  # (N, n_species)
    per_atom = err.abs().pow(power).sum(-1)  # (..., N)
    counts = onehot.sum(0)  # (n_species,)
    present = counts > 0
    means = (per_atom @ onehot) / (3.0 * counts.clamp(min=1.0))
    return species_list, means, present


def per_species_force_mae(
    pred: Tensor, ref: Tensor, numbers: Tensor, species: Sequence[int] | None = None
) -> tuple[list[int], Tensor]:
    """Mean absolute force-component error over the atoms of each species (eV/Å).

    Args:
        pred, ref: forces (N, 3) or per step (S, N, 3).
        numbers: (N,) atomic numbers (the same atoms at every step).
        species: atomic numbers to report, in this order; default: sorted species present.

    Returns:
        (species list, Tensor (n_species,) or (S, n_species)); NaN for a listed species without atoms.
    """
    pred, ref, numbers = _as_tensor(pred), _as_tensor(ref), _as_tensor(numbers, torch.long)
    _check_forces(pred, ref, numbers)
    species_list, means, present = _species_reduce(pred - ref.to(pred.dtype), numbers, species, 1)
    return species_list, torch.where(present, means, torch.full_like(means, float("nan")))


def per_species_force_rmse(
    pred: Tensor, ref: Tensor, numbers: Tensor, species: Sequence[int] | None = None
) -> tuple[list[int], Tensor]:
    """Root-mean-square force-component error over the atoms of each species (eV/Å); as the MAE above."""
    pred, ref, numbers = _as_tensor(pred), _as_tensor(ref), _as_tensor(numbers, torch.long)
    _check_forces(pred, ref, numbers)
    species_list, means, present = _species_reduce(pred - ref.to(pred.dtype), numbers, species, 2)
    return species_list, torch.where(present, means.sqrt(), torch.full_like(means, float("nan")))


def mepa_per_step(
    pred: Tensor,
    ref: Tensor,
    numbers: Tensor,
    species: Sequence[int] | None = None,
    species_reduction: SpeciesReduction = "sum",
) -> Tensor:
    """MEPA of every step: per-species force MAEs combined over the species present (eV/Å).

    ``"sum"`` (default, the DT authors' definition): sum of the per-species MAEs. ``"mean"``: their mean.
    Species listed in ``species`` but without atoms are left out. Returns shape (S,), or () for (N, 3).
    Differentiable with respect to ``pred``.
    """
    pred, ref, numbers = _as_tensor(pred), _as_tensor(ref), _as_tensor(numbers, torch.long)
    _check_forces(pred, ref, numbers)
    _, means, present = _species_reduce(pred - ref.to(pred.dtype), numbers, species, 1)
    return combine_species(means, present, species_reduction)


def combine_species(means: Tensor, present: Tensor, species_reduction: SpeciesReduction = "sum") -> Tensor:
    """MEPA from per-species MAEs (..., n_species): their sum (default) or mean over the ``present`` species."""
    total = (means * present.to(means.dtype)).sum(-1)
    if species_reduction == "sum":
        return total
    if species_reduction == "mean":
        return total / present.sum().clamp(min=1)
    raise ValueError(f"species_reduction must be 'sum' or 'mean', got {species_reduction!r}")


def mepa(
    pred: Tensor,
    ref: Tensor,
    numbers: Tensor,
    species: Sequence[int] | None = None,
    species_reduction: SpeciesReduction = "sum",
) -> Tensor:
    """MEPA (eV/Å): :func:`mepa_per_step`, averaged over steps for (S, N, 3) input. Scalar tensor."""
    per_step = mepa_per_step(pred, ref, numbers, species, species_reduction)
    return per_step.mean() if per_step.dim() else per_step


def force_mae(pred: Tensor, ref: Tensor) -> Tensor:
    """Mean absolute force-component error over all atoms (and steps), eV/Å."""
    pred, ref = _as_tensor(pred), _as_tensor(ref)
    return (pred - ref.to(pred.dtype)).abs().mean()


def force_rmse(pred: Tensor, ref: Tensor) -> Tensor:
    """Root-mean-square force-component error over all atoms (and steps), eV/Å."""
    pred, ref = _as_tensor(pred), _as_tensor(ref)
    return (pred - ref.to(pred.dtype)).pow(2).mean().sqrt()


def _energy_diff_per_atom(pred: Tensor, ref: Tensor, n_atoms: Tensor | int) -> Tensor:
    pred, ref = _as_tensor(pred), _as_tensor(ref)
    n = _as_tensor(n_atoms, pred.dtype).to(pred.device)
    return (pred - ref.to(pred.dtype)) / n


def energy_mae_per_atom(pred: Tensor, ref: Tensor, n_atoms: Tensor | int) -> Tensor:
    """Mean over structures of |E_pred - E_ref| / n_atoms (eV/atom). ``n_atoms``: int or (B,)."""
    return _energy_diff_per_atom(pred, ref, n_atoms).abs().mean()


def energy_rmse_per_atom(pred: Tensor, ref: Tensor, n_atoms: Tensor | int) -> Tensor:
    """sqrt(mean over structures of ((E_pred - E_ref) / n_atoms)^2) (eV/atom)."""
    return _energy_diff_per_atom(pred, ref, n_atoms).pow(2).mean().sqrt()


def force_error_summary(
    pred: Tensor, ref: Tensor, numbers: Tensor, species: Sequence[int] | None = None
) -> dict[str, object]:
    """Plain floats for reports: force MAE/RMSE, per-species MAE/RMSE (keyed by atomic number), MEPA."""
    with torch.no_grad():
        species_list, mae = per_species_force_mae(pred, ref, numbers, species)
        _, rmse = per_species_force_rmse(pred, ref, numbers, species)
        mae_s = mae.reshape(-1, len(species_list)).nanmean(0) if mae.dim() > 1 else mae
        rmse_s = rmse.pow(2).reshape(-1, len(species_list)).nanmean(0).sqrt() if rmse.dim() > 1 else rmse
        return {
            "force_mae": float(force_mae(pred, ref)),
            "force_rmse": float(force_rmse(pred, ref)),
            "force_mae_per_species": {int(z): float(v) for z, v in zip(species_list, mae_s, strict=True)},
            "force_rmse_per_species": {int(z): float(v) for z, v in zip(species_list, rmse_s, strict=True)},
            "mepa_sum": float(mepa(pred, ref, numbers, species, "sum")),
            "mepa_mean": float(mepa(pred, ref, numbers, species, "mean")),
        }
