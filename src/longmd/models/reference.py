"""Per-species reference energies and a force scale: the part of a potential fitted before training.

A model predicts ``E = scale * E_learned + sum_i E_ref[Z_i]``. The reference energies take out the large,
composition-dependent offset of ab initio energies (least squares over the training frames), and the scale
(RMS of the training force components) lets the network work with O(1) numbers. Both are buffers of
:class:`AtomicReference`, not trainable parameters, and are saved with the model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

MAX_Z = 118


def fit_reference_energies(
    numbers_list: Sequence[Sequence[int] | np.ndarray],
    energies: Sequence[float] | np.ndarray,
    species: Iterable[int] | None = None,
) -> dict[int, float]:
    """Per-species reference energies (eV) by least squares: ``energy_f ≈ sum_s count_{f,s} E_ref[s]``.

    Args:
        numbers_list: atomic numbers of each training frame.
        energies: total energy of each frame, eV.
        species: species to return (default: those present); absent species get 0.

    When compositions do not determine every species (e.g. every frame has the same composition) the
    minimum-norm solution is returned; it still reproduces the mean energy of each composition.
    """
    if len(numbers_list) != len(energies):
        raise ValueError(f"fit_reference_energies: {len(numbers_list)} frames but {len(energies)} energies")
    if len(numbers_list) == 0:
        raise ValueError("fit_reference_energies: no frames")
    present = sorted({int(z) for numbers in numbers_list for z in np.asarray(numbers).ravel()})
    column = {z: k for k, z in enumerate(present)}
    counts = np.zeros((len(numbers_list), len(present)))
    for f, numbers in enumerate(numbers_list):
        for z, c in zip(*np.unique(np.asarray(numbers, dtype=np.int64), return_counts=True)):
            counts[f, column[int(z)]] = c
    e = np.asarray(energies, dtype=np.float64)
    if not np.all(np.isfinite(e)):
        raise ValueError("fit_reference_energies: energies contain NaN or inf")
    solution, *_ = np.linalg.lstsq(counts, e, rcond=None)
    wanted = present if species is None else sorted({int(z) for z in species})
    return {z: float(solution[column[z]]) if z in column else 0.0 for z in wanted}


def parse_reference_energies(spec: str | Mapping, species: Iterable[int]) -> dict[int, float] | None:
    """``model.e0s`` of a config: ``None`` for ``"average"`` (fit them), else ``{Z: eV}`` from a mapping of atomic
    numbers or symbols to energies, which must give every one of ``species`` (a ``ValueError`` says what is wrong)."""
    from ase.data import atomic_numbers

    if isinstance(spec, str):
        if spec != "average":
            raise ValueError(f"model.e0s: expected average or {{Z or symbol: eV}}, got {spec!r}")
        return None
    out: dict[int, float] = {}
    for key, value in spec.items():
        z = atomic_numbers.get(key) if isinstance(key, str) and not key.isdigit() else int(key)
        if z is None or not 1 <= z <= MAX_Z:
            raise ValueError(f"model.e0s: {key!r} is not an element symbol or atomic number")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            raise ValueError(f"model.e0s: {key}: expected a finite energy in eV, got {value!r}")
        if z in out:
            raise ValueError(f"model.e0s: element {key!r} given twice")
        out[z] = float(value)
    wanted = sorted({int(z) for z in species})
    missing = [z for z in wanted if z not in out]
    if missing:
        raise ValueError(f"model.e0s: no energy for Z = {missing} (the data holds species {wanted})")
    return {z: out[z] for z in wanted}


def force_rms(forces_list: Iterable[np.ndarray | Tensor]) -> float:
    """RMS of all force components (eV/Å) over the training frames: the natural scale of a model."""
    total, count = 0.0, 0
    for f in forces_list:
        a = f.detach().cpu().double().numpy() if isinstance(f, Tensor) else np.asarray(f, dtype=np.float64)
        total += float(np.sum(a * a))
        count += a.size
    if count == 0:
        raise ValueError("force_rms: no force components")
    return float(np.sqrt(total / count))


class AtomicReference(nn.Module):
    """Species table (Z -> index), reference energies per species and an energy scale.

    ``index(numbers)`` maps atomic numbers to 0..n_species-1 and raises a clear error for unknown ones;
    ``forward(per_atom, index, system, n_systems)`` returns ``scale * sum per system + reference energies``.
    """

    def __init__(self, species: Sequence[int]) -> None:
        super().__init__()
        species = [int(z) for z in species]
        if not species:
            raise ValueError("AtomicReference: species list is empty")
        if len(set(species)) != len(species):
            raise ValueError(f"AtomicReference: duplicate atomic numbers in species {species}")
        bad = [z for z in species if not 1 <= z <= MAX_Z]
        if bad:
            raise ValueError(f"AtomicReference: atomic numbers out of range 1..{MAX_Z}: {bad}")
        self.species = species
        table = torch.full((MAX_Z + 1,), -1, dtype=torch.long)
        table[torch.tensor(species)] = torch.arange(len(species))
        self.register_buffer("z_to_index", table, persistent=False)
        self.register_buffer("energies", torch.zeros(len(species)))
        self.register_buffer("scale", torch.ones(()))
        self._checked: Tensor | None = None  # last `numbers` tensor validated (avoids a sync every MD step)

    @property
    def n_species(self) -> int:
        return len(self.species)

    def index(self, numbers: Tensor) -> Tensor:
        """Species index (N,) of atomic numbers (N,); raises ``ValueError`` naming any unknown Z."""
        if numbers is not self._checked:
            unknown = ~torch.isin(numbers, torch.tensor(self.species, device=numbers.device))
            if bool(unknown.any()):
                zs = sorted({int(z) for z in numbers[unknown].tolist()})
                raise ValueError(f"unknown atomic number(s) {zs}: this model knows species {self.species}")
            self._checked = numbers
        return self.z_to_index[numbers]

    def set_energies(self, energies: Mapping[int, float]) -> None:
        """Set reference energies (eV) from ``{Z: energy}``; species not given keep their value."""
        unknown = sorted(set(int(z) for z in energies) - set(self.species))
        if unknown:
            raise ValueError(f"reference energies given for species {unknown} not in model species {self.species}")
        new = self.energies.detach().clone()
        for z, e in energies.items():
            new[self.species.index(int(z))] = float(e)
        self.energies = new

    def set_scale(self, scale: float) -> None:
        """Set the energy/force scale (eV, eV/Å); must be positive and finite."""
        if not (np.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be positive and finite, got {scale}")
        self.scale = torch.full_like(self.scale, float(scale))

    def reference_energies(self) -> dict[int, float]:
        """``{Z: reference energy in eV}``."""
        return {z: float(e) for z, e in zip(self.species, self.energies.tolist())}

    def forward(
        self, per_atom: Tensor, index: Tensor, system: Tensor, n_systems: int, unscaled: Tensor | None = None
    ) -> Tensor:
        """(B,) energies: ``sum_i [scale * per_atom_i + unscaled_i + E_ref[index_i]]`` per system (eV)."""
        atomic = self.scale * per_atom + self.energies[index]
        if unscaled is not None:
            atomic = atomic + unscaled
        return torch.zeros(n_systems, dtype=atomic.dtype, device=atomic.device).index_add(0, system, atomic)


def init_reference(
    model: nn.Module,
    numbers_list: Sequence[Sequence[int] | np.ndarray],
    energies: Sequence[float] | np.ndarray | None = None,
    forces_list: Iterable[np.ndarray | Tensor] | None = None,
    given: Mapping[int, float] | None = None,
) -> dict[str, object]:
    """Fit and set a model's reference energies (if ``energies``; ``given`` ones instead of a fit) and scale
    (if ``forces_list``).

    Works on any :class:`~longmd.models.base.EnergyModel` with ``has_reference``; others are left as they
    are. Returns what was set: ``{"reference_energies": {Z: eV}, "scale": eV/Å}``.
    """
    if not getattr(model, "has_reference", False):
        return {}
    out: dict[str, object] = {}
    if given is not None:
        ref = {int(z): float(e) for z, e in given.items()}
        model.set_reference_energies(ref)
        out["reference_energies"] = ref
    elif energies is not None:
        ref = fit_reference_energies(numbers_list, energies, species=model.species)
        model.set_reference_energies(ref)
        out["reference_energies"] = ref
    if forces_list is not None:
        scale = force_rms(forces_list)
        if scale > 0:
            model.set_scale(scale)
            out["scale"] = scale
    return out
