"""Checkpoints of ``simulate``: a killed run resumes where its last checkpoint left it.

A checkpoint (``OUT/checkpoint.pt``, written atomically) holds the state of the surviving replicas with their
forces, the thermostat's random-generator state, the stopped replicas, the thermo history and how far every
output file had been written. Resuming from it continues the same trajectories bit for bit: the cached forces
feed the first half-kick, and the Verlet lists are rebuilt from the positions of their last build (the same
pairs in the same order, so sums over edges round alike).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms, FixCom
from torch import nn

from longmd.atomic import atomic_torch_save
from longmd.dynamics.state import FIX_COM, FIXED, MDState, constraint_extras

CHECKPOINT = "checkpoint.pt"
FORMAT = 1


def _change(key: str, saved, now) -> str:
    if isinstance(saved, list) or isinstance(now, list):  # e.g. the atomic numbers of thousands of atoms
        return f"{key}: other values ({len(saved or [])} in the checkpoint, {len(now or [])} now)"
    return f"{key}: {saved!r} in the checkpoint, {now!r} now"


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 of the model's parameter and buffer names and values (as float64 on the host)."""
    digest = hashlib.sha256()
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        digest.update(name.encode())
        value = t.detach().to("cpu")
        digest.update((value.double() if value.is_floating_point() else value).contiguous().numpy().tobytes())
    return digest.hexdigest()


@dataclass
class SimulationCheckpoint:
    """What a resumed run needs (see the module doc). ``run``: the settings a resume must keep."""

    step: int
    state: MDState
    alive: list[int]
    stopped: list[dict]  # the fields of each ReplicaStop, its frame as a frame_record
    generator_state: torch.Tensor | None
    history: dict
    outputs: dict
    run: dict
    wall_s: float
    neighbor_builds: int
    neighbor_reference: dict | None = None  # positions and cells of the last Verlet-list builds, per list

    def save(self, out_dir: Path) -> Path:
        payload = {"format": FORMAT, **{f.name: getattr(self, f.name) for f in fields(self)},
                   "state": self.state.state_dict()}
        return atomic_torch_save(payload, out_dir / CHECKPOINT)

    @classmethod
    def load(cls, out_dir: Path, run: dict, device: str | torch.device) -> SimulationCheckpoint:
        """The checkpoint in ``out_dir``; raises when there is none or ``run`` differs from the stored settings."""
        path = out_dir / CHECKPOINT
        if not path.is_file():
            raise FileNotFoundError(f"resume: no simulation checkpoint {path}")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated or foreign file: torch's own message is long and unhelpful
            raise ValueError(f"resume: {path} is not a readable simulation checkpoint ({type(exc).__name__}); "
                             "delete it to start over") from exc
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise ValueError(f"resume: {path} is not a longmd simulation checkpoint (format {FORMAT} expected)")
        changed = [_change(k, payload["run"].get(k), v) for k, v in run.items() if payload["run"].get(k) != v]
        if changed:
            raise ValueError(f"resume: {path} was written with other settings ({'; '.join(changed)}); "
                             "resume with the same model, structures and ensemble settings, or use a new --out")
        state = MDState.from_state_dict(payload["state"], device)
        kept = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in payload.items() if k in kept and k != "state"}, state=state)


def frame_record(atoms: Atoms) -> dict:
    """An ``Atoms`` frame (with momenta, a single-point energy/forces and FixAtoms / FixCom) as tensors, exactly."""
    record = {key: torch.as_tensor(np.asarray(value)) for key, value in (
        ("numbers", atoms.numbers), ("positions", atoms.positions), ("cell", atoms.cell[:]), ("pbc", atoms.pbc),
        ("masses", atoms.get_masses()), ("momenta", atoms.get_momenta()))}
    if atoms.calc is not None:
        record["energy"] = torch.tensor(atoms.get_potential_energy())
        record["forces"] = torch.as_tensor(atoms.get_forces(apply_constraint=False))
    per_atom, per_system = constraint_extras([atoms])
    return {**record, **per_atom, **per_system}


def frame_from_record(record: dict) -> Atoms:
    """The ``Atoms`` of :func:`frame_record`."""
    atoms = Atoms(numbers=record["numbers"].numpy(), positions=record["positions"].numpy(),
                  cell=record["cell"].numpy(), pbc=record["pbc"].numpy(), masses=record["masses"].numpy())
    atoms.set_momenta(record["momenta"].numpy(), apply_constraint=False)
    if "energy" in record:
        atoms.calc = SinglePointCalculator(atoms, energy=float(record["energy"]), forces=record["forces"].numpy())
    constraints = [FixAtoms(mask=record[FIXED].numpy())] if FIXED in record and bool(record[FIXED].any()) else []
    if FIX_COM in record and bool(record[FIX_COM][0]):
        constraints.append(FixCom())
    atoms.set_constraint(constraints)
    return atoms
