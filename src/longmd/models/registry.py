"""The one place that maps term kinds to classes: builds terms from config and Potentials from saved files.

A term is specified as ``{"name": ..., "kind": ... (default: the name), "preset": ..., "options": {...}}``
(config) or ``{"name", "kind", "hyperparameters"}`` (a saved :meth:`Potential.hyperparameters`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from longmd.models.egnn import PRESETS as EGNN_PRESETS
from longmd.models.egnn import EGNNTerm
from longmd.models.lj import LennardJonesTerm
from longmd.models.pair import PairTerm
from longmd.models.potential import Potential
from longmd.models.reference import AtomicReference
from longmd.models.term import EnergyTerm
from longmd.models.triplet import TripletTerm

MACE_NEEDS = "mace-torch (pip install 'longmd[mace]')"
SCHNETPACK_NEEDS = "schnetpack (pip install 'longmd[schnetpack]')"
NEEDS = {"mace": MACE_NEEDS, "schnet": SCHNETPACK_NEEDS, "painn": SCHNETPACK_NEEDS}  # kinds of optional extras


class TermSpecError(ValueError):
    """Term ``index`` (of kind ``kind``) of a list could not be built: ``cause`` says why."""

    def __init__(self, index: int, kind: str, cause: Exception) -> None:
        super().__init__(f"term {index} ({kind}): {cause}")
        self.index, self.kind, self.cause = index, kind, cause


def _mace_term() -> type[EnergyTerm]:
    from longmd.models.mace import MACETerm  # imports mace-torch only when a MACE term is built

    return MACETerm


def _mace_presets() -> dict[str, dict[str, Any]]:
    from longmd.models.mace import PRESETS

    return PRESETS


def _schnetpack_term(kind: str):
    def load() -> type[EnergyTerm]:
        from longmd.models import schnetpack_terms  # imports schnetpack only when such a term is built

        schnetpack_terms.schnetpack_modules()  # ImportError naming the extra when schnetpack is missing
        return {"schnet": schnetpack_terms.SchNetTerm, "painn": schnetpack_terms.PaiNNTerm}[kind]

    return load


def _schnetpack_presets(kind: str):
    def load() -> dict[str, dict[str, Any]]:
        from longmd.models.schnetpack_terms import PRESETS

        return PRESETS[kind]

    return load


TERM_KINDS: dict[str, tuple[Any, Any]] = {  # kind -> (class or loader, presets or loader)
    "egnn": (EGNNTerm, EGNN_PRESETS),
    "mace": (_mace_term, _mace_presets),
    "schnet": (_schnetpack_term("schnet"), _schnetpack_presets("schnet")),
    "painn": (_schnetpack_term("painn"), _schnetpack_presets("painn")),
    "lj": (LennardJonesTerm, {}),
    "pair": (PairTerm, {}),
    "triplet": (TripletTerm, {}),
}


def term_class(kind: str) -> type[EnergyTerm]:
    """The class of a term kind (``ValueError`` naming the known kinds)."""
    if kind not in TERM_KINDS:
        raise ValueError(f"unknown energy term kind {kind!r} (available: {', '.join(TERM_KINDS)})")
    cls = TERM_KINDS[kind][0]
    if isinstance(cls, type):
        return cls
    try:
        return cls()
    except ImportError as exc:
        raise _needs(kind, exc) from exc


def _needs(kind: str, exc: ImportError) -> ImportError:
    """``exc`` saying which optional extra a ``kind`` term needs (unless it says so already)."""
    if kind in NEEDS and NEEDS[kind] not in str(exc):
        return ImportError(f"a {kind} term needs {NEEDS[kind]}: {exc}")
    return exc


def term_presets(kind: str) -> dict[str, dict[str, Any]]:
    term_class(kind)  # validates the kind
    presets = TERM_KINDS[kind][1]
    return presets if isinstance(presets, dict) else presets()


def build_term(kind: str, species: Sequence[int], preset: str | None = None,
               options: Mapping[str, Any] | None = None) -> EnergyTerm:
    """A new term of ``kind`` for ``species``: the preset's hyper-parameters, ``options`` overriding them."""
    presets = term_presets(kind)
    if preset is not None and preset not in presets:
        known = ", ".join(sorted(presets)) or "none"
        raise ValueError(f"{kind}: unknown preset {preset!r} (available: {known})")
    try:
        return term_class(kind).build(sorted(species), **{**presets.get(preset, {}), **dict(options or {})})
    except ImportError as exc:  # e.g. mace-torch, imported when the network is built
        raise _needs(kind, exc) from exc


def build_potential(species: Sequence[int], terms: Sequence[Mapping[str, Any]]) -> Potential:
    """A new :class:`Potential` of ``terms`` (config form: name, kind, preset, options), built in order."""
    reference = AtomicReference(sorted(int(z) for z in species))
    built: dict[str, EnergyTerm] = {}
    for k, spec in enumerate(terms):
        name, kind = spec["name"], spec.get("kind") or spec["name"]
        if name in built:
            raise ValueError(f"energy term name {name!r} given twice")
        try:
            built[name] = build_term(kind, reference.species, spec.get("preset"), spec.get("options"))
        except (TypeError, ValueError) as exc:
            raise TermSpecError(k, kind, exc) from exc
    return Potential(reference, built)


def potential_from_hyperparameters(species: Sequence[int], terms: Sequence[Mapping[str, Any]]) -> Potential:
    """Rebuild the architecture of a saved :meth:`Potential.hyperparameters` (``species``, ``terms`` of
    ``{name, kind, hyperparameters}``); the weights are loaded afterwards."""
    reference = AtomicReference(species)
    built = {t["name"]: term_class(t["kind"]).build(reference.species, **t["hyperparameters"]) for t in terms}
    return Potential(reference, built)
