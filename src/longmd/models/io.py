"""Save and load models as one plain file: class name, JSON hyper-parameters and the state dict.

A :class:`~longmd.models.potential.Potential` is saved as class ``potential`` with its species and terms
(``{name, kind, hyperparameters}``); files of format 1 (classes ``egnn``, ``mace``, ``lj``) still load.

The file holds only tensors, strings, numbers, lists and dicts, so ``torch.load(path, weights_only=True,
map_location="cpu")`` reads it on any machine (with or without a GPU) and no pickled code runs.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from longmd.atomic import atomic_torch_save
from longmd.examples import resolve
from longmd.models.ase_adapter import PREFIX as ASE_PREFIX
from longmd.models.ase_adapter import ASECalculatorModel, ModelSpecError
from longmd.models.base import EnergyModel
from longmd.models.lj import LennardJones
from longmd.models.mace import PREFIX as MACE_PREFIX
from longmd.models.mace import load_mace
from longmd.models.potential import Potential
from longmd.models.registry import potential_from_hyperparameters
from longmd.models.stride import HarmonicStride
from longmd.models.stride_egnn import EquivariantStride

FORMAT_VERSION = 2  # 1 (up to 33872b7): classes "egnn", "mace", "lj" of single architectures

MODEL_CLASSES: dict[str, Callable[..., torch.nn.Module]] = {  # class name -> rebuild from hyper-parameters
    "potential": potential_from_hyperparameters,
    "lj": LennardJones,
    "harmonic_stride": HarmonicStride,  # the known-answer stride predictor
    "stride_egnn": EquivariantStride,
}
SAVED_TYPES = {Potential: "potential", LennardJones: "lj", HarmonicStride: "harmonic_stride",
               EquivariantStride: "stride_egnn"}
LEGACY_CLASSES = ("egnn", "mace", "lj")  # format 1


def model_name(model: EnergyModel) -> str:
    """Class name a model is saved under (raises ``TypeError`` for models that cannot be saved)."""
    if type(model) in SAVED_TYPES:
        return SAVED_TYPES[type(model)]
    raise TypeError(f"cannot save {type(model).__name__}: not one of MODEL_CLASSES {sorted(MODEL_CLASSES)}")


def _upgrade_format_1(payload: dict[str, Any]) -> dict[str, Any]:
    """A format-1 payload (one architecture per file) as today's: an EGNN or MACE becomes a Potential with one
    term of that name (state-dict keys moved under ``terms.<name>.``), a Lennard-Jones model keeps its class."""
    name, hp, state = payload["class"], dict(payload["hyperparameters"]), payload["state_dict"]
    if name == "lj":
        state = {f"pair.{k}": v for k, v in state.items()}
    else:
        species = hp.pop("species")
        hp = {"species": species, "terms": [{"name": name, "kind": name, "hyperparameters": hp}]}
        state = {k if k.startswith("reference.") else f"terms.{name}.{k}": v for k, v in state.items()}
        name = "potential"
    return {**payload, "class": name, "hyperparameters": hp, "state_dict": state, "format_version": FORMAT_VERSION}


def _model_dtype(model: EnergyModel) -> str:
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            return str(t.dtype).removeprefix("torch.")
    return "float32"


def weights_checksum(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes (sorted by name): flipped bits change it."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_model(model: EnergyModel, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``{"class", "hyperparameters", "state_dict", "dtype", "format_version", "metadata", "sha256"}``
    atomically.

    ``metadata`` (JSON-able, e.g. training provenance) is stored as a JSON string; ``sha256`` is
    :func:`weights_checksum` of the state dict, verified by :func:`read_model_file`.
    """
    path = Path(path)
    hyperparameters = model.hyperparameters()
    state_dict = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    payload = {
        "format_version": FORMAT_VERSION,
        "class": model_name(model),
        "hyperparameters": json.loads(json.dumps(hyperparameters)),  # fails early if not JSON-able
        "dtype": _model_dtype(model),
        "state_dict": state_dict,
        "metadata": json.dumps(metadata or {}),
        "sha256": weights_checksum(state_dict),
    }
    return atomic_torch_save(payload, path)


def read_model_file(path: str | Path) -> dict[str, Any]:
    """The raw payload of a saved model (``weights_only=True``), validated; errors name the file.

    The weights' checksum is verified when the file has one (files written before it existed still load).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        payload = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # torch's messages run to many lines of weights_only advice
        pickled = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        why = f"it pickles {pickled.group(1)}" if pickled else f"torch.load failed: {type(exc).__name__}"
        hint = "; a MACE model? use mace:PATH" if pickled and pickled.group(1).startswith("mace.") else ""
        raise ValueError(f"{path}: not a longmd model file ({why}){hint}") from exc
    keys = payload.keys() if isinstance(payload, dict) else ()
    missing = [k for k in ("class", "hyperparameters", "state_dict") if k not in keys]
    if missing:
        raise ValueError(f"{path}: not a longmd model file (missing keys {missing})")
    if "sha256" in payload and weights_checksum(payload["state_dict"]) != payload["sha256"]:
        raise ValueError(f"{path}: corrupt model file: the weights do not match the checksum stored when it was "
                         "saved (damaged copy or disk?); use another copy")
    version = payload.get("format_version", 1)
    if version == 1 and payload["class"] in LEGACY_CLASSES:
        payload = _upgrade_format_1(payload)
    if payload["class"] not in MODEL_CLASSES:
        raise ValueError(f"{path}: unknown model class {payload['class']!r}; known: {sorted(MODEL_CLASSES)}")
    if version not in (1, FORMAT_VERSION):
        raise ValueError(f"{path}: model file format {version!r}; this longmd reads 1 and {FORMAT_VERSION}")
    return payload


def load_model(path: str | Path, device: str | torch.device = "cpu") -> EnergyModel:
    """Rebuild a saved model on ``device`` (in the dtype it was saved in), in eval mode."""
    payload = read_model_file(path)
    build = MODEL_CLASSES[payload["class"]]
    dtype = getattr(torch, str(payload.get("dtype", "float32")), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"{path}: invalid dtype {payload.get('dtype')!r}")
    try:
        model = build(**payload["hyperparameters"]).to(dtype=dtype)  # cast first: loading is then lossless
        model.load_state_dict(payload["state_dict"], strict=True)
    except (TypeError, RuntimeError, ValueError, KeyError) as exc:
        raise ValueError(f"{path}: cannot rebuild {payload['class']} from the saved file ({exc})") from exc
    return model.to(device=device).eval()


def open_model(spec: str, device: str | torch.device = "cpu", ase_cutoff: float = 5.0) -> torch.nn.Module:
    """Any model a command line names: a longmd model file (or ``example:NAME``), ``mace:PATH`` (a model
    saved by ``mace_run_train``) or ``ase:module:Name?key=value`` (an ASE calculator, see
    :mod:`longmd.models.ase_adapter`)."""
    if spec.startswith(ASE_PREFIX):
        return ASECalculatorModel.from_spec(spec, cutoff=ase_cutoff)
    if spec.startswith(MACE_PREFIX):
        return load_mace(spec, device=device)
    if ":" in spec and not Path(spec).exists() and not spec.startswith("example:"):
        raise ModelSpecError(f"model {spec!r}: not a file; give a longmd model file, 'mace:PATH' or an ASE "
                             "calculator 'ase:module.path:Name?key=value' (e.g. 'ase:ase.calculators.emt:EMT')")
    return load_model(resolve(spec), device=device)


def load_metadata(path: str | Path) -> dict[str, Any]:
    """The ``metadata`` dict stored by :func:`save_model`."""
    return json.loads(read_model_file(path).get("metadata", "{}"))
