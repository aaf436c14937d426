"""Read AIMD trajectories from anything ``ase.io.read`` reads, validated, into :class:`Trajectory` objects.

Every problem raises :class:`DataError` with a message naming the file, the frame (index among the frames
read from that file) and the key, e.g. ``run.xyz: frame 12: key 'forces': contains NaN or inf``.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ase.io
import ase.io.formats
import numpy as np
from ase import Atoms

from longmd.data.trajectory import Trajectory, unwrap_positions
from longmd.io.consistency import CONSISTENCY_TOLERANCE, first_inconsistent
from longmd.units import fs_to_ase_time

PathLike = str | os.PathLike


class DataError(ValueError):
    """Invalid or unreadable input data; the message names file, frame and key."""


def _err(file: str, frame: int | str | None, key: str | None, problem: str) -> DataError:
    where = [file]
    if isinstance(frame, str):  # a label, e.g. "last frame"
        where.append(frame)
    elif frame is not None:
        where.append(f"frame {frame}")
    if key is not None:
        where.append(f"key {key!r}")
    return DataError(": ".join([*where, problem]))


def read_trajectories(
    paths: PathLike | Sequence[PathLike],
    *,
    energy_key: str = "energy",
    forces_key: str = "forces",
    traj_id_key: str = "traj_id",
    velocities_key: str = "velocities",
    timestep_fs: float | None = None,
    index: str | int | slice = ":",
) -> list[Trajectory]:
    """Read one or more files into trajectories.

    One file is one trajectory, unless its frames carry ``info[traj_id_key]``: then frames are grouped
    by id (first-appearance order; frames keep their order within an id).

    Energy and forces come from ``atoms.info[energy_key]`` / ``atoms.arrays[forces_key]`` or from the
    calculator results ASE attaches (extxyz, .traj, vasprun.xml, OUTCAR). Velocities come from ``momenta``
    (ASE) or ``arrays[velocities_key]`` (Å/ASE-time, as ``Atoms.get_velocities``); if neither is stored,
    they are central finite differences of the unwrapped positions (one-sided, second order, at the ends),
    with a warning. The timestep (between stored frames) is ``info["timestep_fs"]`` from the file, else
    ``timestep_fs``; it is checked against ``info["time_fs"]`` and ``info["step"]`` when frames carry them.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[Trajectory] = []
    for path in paths:
        out.extend(
            _read_file(
                Path(path),
                energy_key=energy_key,
                forces_key=forces_key,
                traj_id_key=traj_id_key,
                velocities_key=velocities_key,
                timestep_fs=timestep_fs,
                index=index,
            )
        )
    return out


_OPENERS = {".xz": lzma.open, ".gz": gzip.open, ".bz2": bz2.open}


def read_frames(path: PathLike, index: Any = ":") -> Atoms | list[Atoms]:
    """``ase.io.read``; compressed files are decompressed into memory first.

    ASE seeks inside compressed streams frame by frame, which makes reading every frame of an .xz file
    quadratic in its length (minutes for the embedded example, seconds this way).
    """
    path = Path(path)
    opener = _OPENERS.get(path.suffix)
    if opener is None:
        return ase.io.read(path, index=index)
    fmt = ase.io.formats.filetype(path.with_suffix(""), read=False)
    with opener(path, "rt") as f:
        return ase.io.read(io.StringIO(f.read()), index=index, format=fmt)


def _read_checked(path: Path, index: Any) -> Atoms | list[Atoms]:
    file = str(path)
    if not path.is_file():
        raise _err(file, None, None, "file not found")
    try:
        return read_frames(path, index)
    except Exception as exc:  # ASE raises many kinds of errors for unreadable files
        raise _err(file, None, None, f"cannot read ({type(exc).__name__}: {exc})") from exc


def split_index(spec: PathLike) -> tuple[str, int | slice | None]:
    """ASE's ``FILE@INDEX`` syntax (``run.extxyz@-1``, ``@0``, ``@:5``) -> ``(FILE, index)``; ``(spec, None)``
    when ``spec`` has no ``@INDEX`` (or is an existing file whose name contains ``@``)."""
    text = str(spec)
    path, at, index = text.rpartition("@")
    if not at or not path or Path(text).exists():
        return text, None
    try:
        parsed = ase.io.formats.string2index(index)
    except ValueError:
        parsed = None
    if not isinstance(parsed, (int, slice)):
        raise _err(path, None, None, f"index {index!r} after '@' is not an integer or a slice")
    return path, parsed


def read_structure(path: PathLike, index: int | slice = -1) -> Atoms:
    """One frame (default: the last) of a structure file, e.g. the start of an MD run, checked: a
    :class:`DataError` names the file and frame when it cannot be read, ``index`` does not select exactly one
    frame, or the frame holds non-finite positions, cell or momenta."""
    if isinstance(index, slice):
        text = ":".join("" if v is None else str(v) for v in (index.start, index.stop, index.step)).rstrip(":")
        raise _err(str(path), None, None, f"index {text or ':'!r} selects several frames; a structure needs one "
                   "(e.g. FILE@-1 for the last, FILE@0 for the first)")
    atoms = _read_checked(Path(path), index)
    if not isinstance(atoms, Atoms):
        raise _err(str(path), None, None, f"index {index!r} does not select one frame")
    frame = "last frame" if index == -1 else f"frame {index}"
    n = len(atoms)
    _array(str(path), frame, "positions", atoms.positions, (n, 3))
    _array(str(path), frame, "cell", atoms.cell.array, (3, 3))
    if "momenta" in atoms.arrays:
        _array(str(path), frame, "momenta", atoms.arrays["momenta"], (n, 3))
    return atoms


def _read_file(path: Path, *, traj_id_key: str, index: Any, **keys: Any) -> list[Trajectory]:
    file = str(path)
    frames = _read_checked(path, index)
    if isinstance(frames, Atoms):
        frames = [frames]
    if len(frames) == 0:
        raise _err(file, None, None, "no frames")
    groups: dict[Any, list[int]] = {}
    has_id = [traj_id_key in a.info for a in frames]
    if any(has_id):
        for k, atoms in enumerate(frames):
            if not has_id[k]:
                raise _err(file, k, traj_id_key, "missing (other frames of this file carry it)")
            groups.setdefault(atoms.info[traj_id_key], []).append(k)
        # Names use the file's base name, so a run's split.json still matches after the data moves.
        return [_build(file, f"{path.name}::{tid}", frames, idx, **keys) for tid, idx in groups.items()]
    return [_build(file, path.name, frames, list(range(len(frames))), **keys)]


def _build(
    file: str,
    name: str,
    frames: list[Atoms],
    idx: list[int],
    *,
    energy_key: str,
    forces_key: str,
    velocities_key: str,
    timestep_fs: float | None,
) -> Trajectory:
    first = frames[idx[0]]
    numbers, pbc, masses = first.numbers.copy(), first.pbc.copy(), first.get_masses()
    n = len(numbers)
    energy_key = _resolve_key(file, idx[0], first, energy_key, "info")
    forces_key = _resolve_key(file, idx[0], first, forces_key, "arrays")
    positions, cells, forces, energy, velocities = [], [], [], [], []
    for k in idx:
        atoms = frames[k]
        if len(atoms) != n:
            raise _err(file, k, "numbers", f"atom count changed from {n} to {len(atoms)} inside {name}")
        if not np.array_equal(atoms.numbers, numbers):
            raise _err(file, k, "numbers", f"species order changed inside {name}")
        if not np.array_equal(atoms.pbc, pbc):
            raise _err(file, k, "pbc", f"pbc changed from {pbc.tolist()} to {atoms.pbc.tolist()}")
        if not np.allclose(atoms.get_masses(), masses):
            raise _err(file, k, "masses", f"masses changed inside {name}")
        positions.append(_array(file, k, "positions", atoms.positions, (n, 3)))
        cells.append(_array(file, k, "cell", atoms.cell.array, (3, 3)))
        forces.append(_array(file, k, forces_key, _required(file, k, atoms, forces_key, "arrays"), (n, 3)))
        energy.append(_array(file, k, energy_key, _required(file, k, atoms, energy_key, "info"), ()))
        velocities.append(_velocities(file, k, atoms, velocities_key, masses, n))
    _all_or_none(file, idx, velocities, "momenta/" + velocities_key)
    dt = _timestep(file, frames, idx, timestep_fs)
    pos = np.stack(positions)
    cell = np.stack(cells)
    if velocities[0] is None:
        how = "finite differences of unwrapped positions" if len(idx) > 1 else "zero (a single frame)"
        warnings.warn(f"{name}: no 'momenta' or {velocities_key!r} stored; velocities are {how}", stacklevel=4)
        vel = finite_difference_velocities(pos, cell, pbc, dt)
    else:
        vel = np.stack(velocities)
        has_steps = _info_series(file, frames, idx, "step") is not None  # then _timestep finds dropped frames
        bad = None if has_steps else first_inconsistent(pos, cell, pbc, vel, dt)
        if bad is not None:
            k, mismatch = bad
            raise _err(file, idx[k], "positions", (
                f"do not follow from frame {idx[k - 1]} by its velocities in timestep_fs={dt:g} (mismatch "
                f"{mismatch:.2f} of the displacement, at most {CONSISTENCY_TOLERANCE} expected): a frame dropped "
                "between them, or a wrong timestep (the file's timestep_fs, --timestep-fs or data.timestep_fs)"))
    try:
        return Trajectory(name, numbers, masses, pos, cell, pbc, np.stack(forces), np.array(energy), vel, dt)
    except ValueError as exc:
        raise _err(file, None, None, str(exc)) from exc


def _lookup(atoms: Atoms, key: str, where: str) -> Any:
    store = atoms.info if where == "info" else atoms.arrays
    if key in store:
        return store[key]
    calc = atoms.calc
    results = getattr(calc, "results", None) or {}
    if key in results:
        return results[key]
    return None


#: Option and config key that point at each kind of key, for the error of a missing one.
_KEY_OPTIONS = {"info": ("--energy-key", "data.energy_key"), "arrays": ("--forces-key", "data.forces_key")}
_DEFAULT_KEYS = {"info": "energy", "arrays": "forces"}
MACE_PREFIX = "REF_"  # mace_run_train's default keys: REF_energy, REF_forces, REF_stress


def _candidates(atoms: Atoms, where: str) -> list[str]:
    """Keys of a frame that could hold a total energy (``info``: scalars) or forces (``arrays``: (N, 3))."""
    results = getattr(atoms.calc, "results", None) or {}
    store = {**(atoms.info if where == "info" else atoms.arrays), **results}
    shape = () if where == "info" else (len(atoms), 3)
    keys = []
    for key, value in store.items():
        try:
            if np.shape(value) == shape and np.asarray(value).dtype.kind == "f":
                keys.append(key)
        except (TypeError, ValueError):  # ragged or non-numeric values
            continue
    return sorted(set(keys) - {"positions", "momenta", "velocities", "timestep_fs", "time_fs"})


def _missing(atoms: Atoms, key: str, where: str) -> str:
    """The message of a missing energy (``where="info"``) or forces (``"arrays"``) key: what the frame holds
    instead and how to point at it."""
    flag, config_key = _KEY_OPTIONS[where]
    held = _candidates(atoms, where)
    found = f"this frame holds {', '.join(repr(k) for k in held)}" if held else "nothing that fits"
    return (f"missing (not in info/arrays or calculator results); {found}; name the key with {flag} "
            f"or {config_key} in a training config")


def _required(file: str, frame: int, atoms: Atoms, key: str, where: str) -> Any:
    value = _lookup(atoms, key, where)
    if value is None:
        raise _err(file, frame, key, _missing(atoms, key, where))
    return value


def _resolve_key(file: str, frame: int, atoms: Atoms, key: str, where: str) -> str:
    """``key``, or MACE's ``REF_<key>`` when the default key is absent and that one is there (with a warning)."""
    if _lookup(atoms, key, where) is not None:
        return key
    mace_key = MACE_PREFIX + key
    if key == _DEFAULT_KEYS[where] and _lookup(atoms, mace_key, where) is not None:
        flag, config_key = _KEY_OPTIONS[where]
        warnings.warn(f"{file}: no {key!r}; reading MACE's {mace_key!r} instead ({flag} / {config_key} "
                      "choose another key)", stacklevel=5)
        return mace_key
    raise _err(file, frame, key, _missing(atoms, key, where))


def _array(file: str, frame: int | str, key: str, value: Any, shape: tuple[int, ...]) -> np.ndarray:
    if value is None:
        raise _err(file, frame, key, "missing (not in info/arrays or calculator results)")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise _err(file, frame, key, f"not numeric ({exc})") from exc
    if arr.shape != shape:
        raise _err(file, frame, key, f"has shape {arr.shape}, expected {shape}")
    if not np.all(np.isfinite(arr)):
        raise _err(file, frame, key, "contains NaN or inf")
    return arr


def _velocities(
    file: str, frame: int, atoms: Atoms, velocities_key: str, masses: np.ndarray, n: int
) -> np.ndarray | None:
    if "momenta" in atoms.arrays:
        return _array(file, frame, "momenta", atoms.arrays["momenta"], (n, 3)) / masses[:, None]
    if velocities_key in atoms.arrays:
        return _array(file, frame, velocities_key, atoms.arrays[velocities_key], (n, 3))
    return None


def _all_or_none(file: str, idx: list[int], values: list[Any], key: str) -> None:
    present = [v is not None for v in values]
    if any(present) and not all(present):
        k = idx[present.index(not present[0])]
        state = "missing here but present" if present[0] else "present here but missing"
        raise _err(file, k, key, f"{state} in the first frame of the trajectory")


def _info_series(file: str, frames: list[Atoms], idx: list[int], key: str) -> np.ndarray | None:
    values = [frames[k].info.get(key) for k in idx]
    _all_or_none(file, idx, values, key)
    if values[0] is None:
        return None
    return np.array([_array(file, k, key, v, ()) for k, v in zip(idx, values, strict=True)])


def _timestep(file: str, frames: list[Atoms], idx: list[int], timestep_fs: float | None) -> float:
    stored = _info_series(file, frames, idx, "timestep_fs")
    if stored is not None:
        bad = np.flatnonzero(~np.isclose(stored, stored[0], rtol=1e-9, atol=0.0))
        if bad.size:
            raise _err(file, idx[bad[0]], "timestep_fs", f"{stored[bad[0]]} differs from {stored[0]}")
        if timestep_fs is not None and not np.isclose(stored[0], timestep_fs, rtol=1e-9):
            warnings.warn(
                f"{file}: timestep_fs={stored[0]} in the file overrides the given {timestep_fs}", stacklevel=4
            )
        dt = float(stored[0])
    elif timestep_fs is not None:
        dt = float(timestep_fs)
    else:
        raise _err(file, idx[0], "timestep_fs", "no timestep in the file; pass timestep_fs "
                   "(--timestep-fs, or data.timestep_fs in a training config)")
    if not (np.isfinite(dt) and dt > 0):
        raise _err(file, idx[0], "timestep_fs", f"must be positive, got {dt}")
    time = _info_series(file, frames, idx, "time_fs")
    if time is not None and len(idx) > 1:
        diffs = np.diff(time)
        bad = np.flatnonzero(~np.isclose(diffs, dt, rtol=1e-6, atol=1e-9))
        if bad.size:
            b = bad[0]
            raise _err(
                file,
                idx[b + 1],
                "time_fs",
                f"non-uniform timestep: {time[b]} -> {time[b + 1]} fs, expected a step of {dt} fs",
            )
    step = _info_series(file, frames, idx, "step")
    if step is not None and len(idx) > 1:
        diffs = np.diff(step)
        bad = np.flatnonzero((diffs != diffs[0]) | (diffs <= 0))
        if bad.size:
            b = bad[0]
            raise _err(
                file,
                idx[b + 1],
                "step",
                f"non-uniform steps: {step[b]:g} -> {step[b + 1]:g}, expected a stride of {diffs[0]:g}",
            )
    return dt


def finite_difference_velocities(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, timestep_fs: float
) -> np.ndarray:
    """(T, N, 3) velocities in Å/ASE-time from positions by central differences of the unwrapped path.

    Second-order one-sided differences at the ends (first order with two frames; zeros for one frame).
    """
    x = unwrap_positions(positions, cell, pbc)
    dt = fs_to_ase_time(timestep_fs)
    v = np.zeros_like(x)
    if len(x) == 2:
        v[:] = (x[1] - x[0]) / dt
    elif len(x) > 2:
        v[1:-1] = (x[2:] - x[:-2]) / (2 * dt)
        v[0] = (-3 * x[0] + 4 * x[1] - x[2]) / (2 * dt)
        v[-1] = (3 * x[-1] - 4 * x[-2] + x[-3]) / (2 * dt)
    return v
