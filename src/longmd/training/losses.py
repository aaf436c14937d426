"""Training losses of Dynamic Training, after the DT paper.

Per step s a *force term* compares the model's forces with the reference forces of that step:

- ``mepa``: per-species mean absolute force-component error, combined over species (sum by default, as
  the DT authors' code; see :mod:`longmd.analysis.force_errors`), so 2 H atoms are not drowned by 49 C;
- ``mae``: plain mean absolute force-component error over all atoms;
- ``mse``: mean squared force-component error (MACE-style weighted MSE together with the energy term). At
  S = 1 it is the inductive-bias paper's loss, ``p_e * mean_b ((E_b - E_b^ref) / N_b)^2 + p_f * mean (F - F^ref)^2``
  with ``p_e = energy_weight`` and ``p_f = force_weight`` (force error per component: 1/3 of the per-atom
  squared norm, a factor that p_f absorbs).

S = 1 (single frames): ``energy_weight * energy term + force_weight * force term(0)``, where the energy term
is the per-atom energy error (absolute for mepa/mae, squared for mse).

S > 1 (rollouts): ``force_weight * (first_step_weight * term(0) + sum_{s>=1} term(s))`` and no energy
term: step 0 is the only frame whose positions equal the reference ones, hence its weight (50 in the paper).

:func:`rollout_loss` adds named terms on other rollout fields, each summed over steps s >= 1 (step 0 is the
reference frame itself): ``position_weight`` times the position error (Å) and ``momentum_weight`` times the
momentum error (amu·Å/fs), absolute for mepa/mae and squared for mse, per component. A rollout without forces
(a stride predictor) has no force or energy term.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from longmd.analysis.force_errors import mepa
from longmd.units import fs_to_ase_time

LOSSES = ("mepa", "mae", "mse")


@dataclass(frozen=True)
class LossSettings:
    kind: str = "mepa"
    species_reduction: str = "sum"
    energy_weight: float = 1.0
    force_weight: float = 1.0
    first_step_weight: float = 50.0
    position_weight: float = 0.0
    momentum_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in LOSSES:
            raise ValueError(f"unknown loss '{self.kind}' (choose from {', '.join(LOSSES)})")


def force_term(pred: Tensor, ref: Tensor, numbers: Tensor, settings: LossSettings,
               species: Sequence[int] | None = None) -> Tensor:
    """The force term of one step; pred/ref (N, 3). ``species``: those of ``numbers`` for MEPA (default: read
    from ``numbers``, a host transfer)."""
    if settings.kind == "mepa":
        return mepa(pred, ref, numbers, species, species_reduction=settings.species_reduction)
    if settings.kind == "mae":
        return (pred - ref).abs().mean()
    return (pred - ref).pow(2).mean()


def energy_term(pred: Tensor, ref: Tensor, n_atoms: Tensor, settings: LossSettings) -> Tensor:
    """Per-atom energy error of a batch of systems; pred/ref/n_atoms (B,)."""
    err = (pred - ref) / n_atoms.to(pred.dtype)
    return err.pow(2).mean() if settings.kind == "mse" else err.abs().mean()


class LossParts(Mapping[str, float]):
    """The parts of a loss as floats, read from the device in one transfer when first looked at (not at all
    when nobody looks)."""

    def __init__(self, terms: dict[str, Tensor]) -> None:
        self._terms = {name: t.detach() for name, t in terms.items()}
        self._values: dict[str, float] | None = None

    def _floats(self) -> dict[str, float]:
        if self._values is None:
            values = torch.stack([t.to(torch.float64) for t in self._terms.values()]).tolist()
            self._values = dict(zip(self._terms, values, strict=True))
        return self._values

    def __getitem__(self, name: str) -> float:
        return self._floats()[name]

    def __contains__(self, name: object) -> bool:
        return name in self._terms

    def __iter__(self) -> Iterator[str]:
        return iter(self._terms)

    def __len__(self) -> int:
        return len(self._terms)

    def __repr__(self) -> str:
        return repr(self._floats())


def sequence_loss(
    forces: list[Tensor] | Tensor,
    ref_forces: Tensor,
    numbers: Tensor,
    settings: LossSettings,
    energy: Tensor | None = None,
    ref_energy: Tensor | None = None,
    n_atoms: Tensor | None = None,
) -> tuple[Tensor, Mapping[str, float]]:
    """Loss of a batch of windows of S steps.

    Args:
        forces: S tensors (N, 3) predicted along the rollout (step 0 at the reference positions).
        ref_forces: (S, N, 3) reference forces. numbers: (N,).
        energy, ref_energy, n_atoms: (B,) predicted/reference energy of step 0 and atom counts (used at S = 1).

    Returns:
        (loss, parts) where parts holds the force term of every step and the energy term as floats (a
        :class:`LossParts`: read from the device only when looked at).
    """
    steps = len(forces)
    species = sorted(set(numbers.tolist())) if settings.kind == "mepa" else None  # read once, not every step
    terms = [force_term(forces[s], ref_forces[s], numbers, settings, species) for s in range(steps)]
    parts = {f"force_{s}": t for s, t in enumerate(terms)}
    if steps == 1:
        loss = settings.force_weight * terms[0]
        if energy is not None and settings.energy_weight:
            if ref_energy is None or n_atoms is None:
                raise ValueError("the energy term needs ref_energy and n_atoms")
            e_term = energy_term(energy, ref_energy, n_atoms, settings)
            parts["energy"] = e_term
            loss = loss + settings.energy_weight * e_term
        return loss, LossParts(parts)
    rest = torch.stack(terms[1:]).sum()
    return settings.force_weight * (settings.first_step_weight * terms[0] + rest), LossParts(parts)


def field_term(pred: Tensor, ref: Tensor, settings: LossSettings) -> Tensor:
    """Mean absolute (mepa, mae) or squared (mse) error of one step's (N, 3) positions or momenta."""
    err = pred - ref
    return err.pow(2).mean() if settings.kind == "mse" else err.abs().mean()


def rollout_loss(
    fields: Mapping[str, list[Tensor]],
    reference: Mapping[str, Tensor],
    numbers: Tensor,
    settings: LossSettings,
    n_atoms: Tensor,
    scales: Mapping[str, Tensor] | None = None,
) -> tuple[Tensor, Mapping[str, float]]:
    """Loss of a batch of windows: the force (and S = 1 energy) terms of :func:`sequence_loss` when the rollout
    has forces, plus the weighted position and momentum terms of steps >= 1 (see the module doc).

    ``fields``: per-step lists of the rollout ("forces", "energy", "positions", "momenta"); ``reference``: the
    windows' (S, N, 3) "forces", "positions", "momenta" and (S, B) "energy". ``scales``: optional (N,) per-atom
    units of "positions" and/or "momenta" errors (a stride predictor's per-species target scales), replacing Å
    and amu·Å/fs, so the terms are unitless (FlashMD's normalised targets).
    """
    terms: dict[str, Tensor] = {}
    loss = None
    if fields.get("forces"):
        energy = fields["energy"][0] if fields.get("energy") else None
        loss, parts = sequence_loss(fields["forces"], reference["forces"], numbers, settings, energy=energy,
                                    ref_energy=reference["energy"][0], n_atoms=n_atoms)
        terms.update(parts._terms)
    per_fs = fs_to_ase_time(1.0)  # momenta in amu·Å/fs
    scales = scales or {}
    for name, weight, unit in (("positions", settings.position_weight, 1.0),
                               ("momenta", settings.momentum_weight, per_fs)):
        steps = fields.get(name) or []
        if not weight or len(steps) < 2:
            continue
        if name in scales:  # the model's per-atom units of this field (a stride predictor's target scales)
            unit = 1.0 / scales[name][:, None]
        parts = [field_term(steps[s] * unit, reference[name][s] * unit, settings) for s in range(1, len(steps))]
        terms.update({f"{name}_{s + 1}": t for s, t in enumerate(parts)})
        total = weight * torch.stack(parts).sum()
        loss = total if loss is None else loss + total
    if loss is None:
        raise ValueError("the loss has no term: a rollout without forces needs training.position_weight or "
                         "training.momentum_weight > 0 and windows of at least 2 frames")
    return loss, LossParts(terms)
