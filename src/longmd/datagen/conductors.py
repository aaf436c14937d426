"""Reference data of the GraNNField study's Li-ion conductors, CHGNet standing in for DFT (cells for 2 CPU cores):

* ``lgps``: Li10GeP2S12, the training material;
* ``li3ps4``, ``li4ges4``: the transfer tests (elements shared with LGPS). No coordinates of theirs could be
  verified for shipping yet, so these need ``cell_file``: an ordered, fully occupied cell (CIF, POSCAR, ...) of the
  published structure; its composition is checked, its hash stored, and axes thinner than 7.5 Å are doubled.

Each structure comes from published crystallographic data, cited in :data:`MATERIALS` and in the metadata; where
the experiment reports partially occupied Li sites the recipe uses a published ordered cell and says so. The start
is relaxed with CHGNet at the published cell (positions only) and refused if it collapses. Every run then
thermalises with Langevin (discarded, as the paper discards its first 15 ps) and continues NVT with a Nosé-Hoover
chain (deterministic, momentum conserving, so the dynamics and the Li mean square displacement are not damped),
storing every step (positions, momenta, forces, energy) for Dynamic Training and transport. Runs are indexed
``run * n_temperatures + temperature`` so the first pass over the temperatures finishes before the repeats that
give the reference's own noise floor. Resumable like the other recipes: per-run atomic writes with sidecars,
``assemble`` into one rounded xz extxyz file plus metadata (protocol, source, versions, time, drift).
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.io import read
from ase.md.nose_hoover_chain import NoseHooverChainNVT
from ase.md.velocitydistribution import Stationary
from ase.optimize import FIRE

from longmd.datagen import common


@dataclass(frozen=True)
class Material:
    """A conductor's structure file (in ``longmd/datagen/structures``) and where its data come from."""

    formula: dict[str, int]  # one formula unit
    file: str | None  # None: the user supplies the cell (``cell_file``)
    repeat: tuple[int, int, int] | None  # None: double every axis thinner than 7.5 Å
    role: str
    source: str


MATERIALS: dict[str, Material] = {
    "lgps": Material(
        formula={"Li": 10, "Ge": 1, "P": 2, "S": 12},
        file="lgps_mp-696138.vasp",
        repeat=(1, 1, 1),
        role="training",
        source=(
            "Li10GeP2S12, tetragonal P4_2/nmc with partially occupied Li sites: Kamaya et al., Nat. Mater. 10, 682 "
            "(2011). Ordered model used here: the Materials Project's ordered cell mp-696138 (PBE-relaxed, 50 atoms, "
            "P1; Jain et al., APL Mater. 1, 011002 (2013), CC BY 4.0), taken as the 2x2x2 supercell LGPS.vasp of "
            "github.com/hydrogen1222/mlipx (commit 75f6467) and reduced to its 50-atom cell, which tiles it back "
            "within 5e-8 (fractional)."
        ),
    ),
    "li3ps4": Material(
        formula={"Li": 3, "P": 1, "S": 4}, file=None, repeat=None, role="transfer test",
        source=("beta-Li3PS4, orthorhombic Pnma (partially occupied Li sites): Homma et al., Solid State Ionics 182, "
                "53 (2011); needs an ordered cell of it, e.g. the Materials Project's mp-985583 (cell_file)."),
    ),
    "li4ges4": Material(
        formula={"Li": 4, "Ge": 1, "S": 4}, file=None, repeat=None, role="transfer test",
        source=("Li4GeS4, orthorhombic Pnma (fully ordered): Murayama et al., J. Solid State Chem. 168, 140 (2002); "
                "needs that cell (cell_file), e.g. the Materials Project's mp-30249."),
    ),
}
MIN_WIDTH_A = 7.5  # user cells: axes thinner than this are doubled (64-72 atoms for the two transfer tests)


@dataclass
class ConductorProtocol:
    """Every choice of one material's reference runs (stored in the metadata)."""

    material: str
    cell_file: str | None = None  # the material's cell where none ships with longmd
    temperatures_K: tuple[float, ...] = (800.0, 1000.0, 1200.0)
    runs_per_temperature: int = 2  # independent runs (own seeds): the reference's noise floor
    n_frames: int = 2500  # stored NVT frames per run (every step), first one included
    timestep_fs: float = 2.0
    equilibrate_steps: int = 500  # Langevin at the run's temperature, discarded
    friction_per_fs: float = 0.01  # of the equilibration
    thermostat_damping_fs: float = 100.0  # Nosé-Hoover chain of the stored part
    relax_fmax: float = 0.05  # eV/Å, positions only at the published cell
    relax_steps: int = 200
    seed: int = 2026
    workers: int = 1
    round_positions: int = 5
    round_momenta: int = 5
    round_forces: int = 4
    extra: dict = field(default_factory=dict)

    @property
    def n_trajectories(self) -> int:
        return len(self.temperatures_K) * self.runs_per_temperature


def protocol_for(material: str, **changes) -> ConductorProtocol:
    """The default protocol of ``material`` with ``changes``, checked (a ``ValueError`` naming the option)."""
    if material not in MATERIALS:
        raise ValueError(f"datagen li-conductors: unknown material {material!r} (available: {', '.join(MATERIALS)})")
    protocol = replace(ConductorProtocol(material), **changes)
    protocol.temperatures_K = tuple(float(t) for t in protocol.temperatures_K)
    if not protocol.temperatures_K or min(protocol.temperatures_K) <= 0:
        raise ValueError(f"datagen li-conductors: temperatures must be > 0 K, got {protocol.temperatures_K}")
    for name in ("runs_per_temperature", "n_frames"):
        if getattr(protocol, name) < (2 if name == "n_frames" else 1):
            raise ValueError(f"datagen li-conductors: {name} too small ({getattr(protocol, name)})")
    if MATERIALS[material].file is None and protocol.cell_file is None:
        raise ValueError(f"datagen li-conductors: {material} needs --cell FILE, an ordered cell of the published "
                         f"structure ({MATERIALS[material].source})")
    if protocol.cell_file is not None:
        if not Path(protocol.cell_file).is_file():
            raise ValueError(f"datagen li-conductors: --cell {protocol.cell_file}: no such file")
        protocol.cell_file = str(Path(protocol.cell_file).resolve())
    if protocol.equilibrate_steps < 0 or protocol.timestep_fs <= 0:
        raise ValueError("datagen li-conductors: need equilibrate_steps >= 0 and timestep_fs > 0")
    return protocol


def run_setting(protocol: ConductorProtocol, index: int) -> tuple[float, int]:
    """(temperature in K, repeat number) of run ``index``: all temperatures once, then the repeats."""
    n = len(protocol.temperatures_K)
    return protocol.temperatures_K[index % n], index // n


def structure_path(material: str, cell_file: str | None = None) -> Path:
    """The cell's file: ``cell_file`` if given, else the one shipped for ``material``."""
    if cell_file is not None:
        return Path(cell_file)
    return Path(str(resources.files("longmd.datagen") / "structures" / MATERIALS[material].file))


def auto_repeat(atoms: Atoms) -> tuple[int, int, int]:
    """Double every axis whose perpendicular width is under :data:`MIN_WIDTH_A` (repeatedly)."""
    widths = atoms.get_volume() / np.linalg.norm(np.cross(atoms.cell[[1, 2, 0]], atoms.cell[[2, 0, 1]]), axis=1)
    return tuple(int(2 ** np.ceil(np.log2(max(1.0, MIN_WIDTH_A / w)))) for w in widths)


def build_cell(material: str, cell_file: str | None = None) -> Atoms:
    """The material's published (ordered) cell, repeated to the recipe's size; its composition and occupancy
    checked (a ``ValueError`` naming the file)."""
    spec = MATERIALS[material]
    path = structure_path(material, cell_file)
    try:
        atoms = read(path)
    except Exception as exc:  # ASE raises many kinds; name the file
        raise ValueError(f"{path}: cannot read a structure ({exc})") from exc
    occupancy = atoms.info.get("occupancy")
    if occupancy and any(abs(sum(site.values()) - 1.0) > 1e-6 or len(site) > 1 for site in occupancy.values()):
        raise ValueError(f"{path}: partially occupied sites; give an ordered cell of the structure")
    atoms = atoms.repeat(spec.repeat or auto_repeat(atoms))
    symbols = atoms.get_chemical_symbols()
    counts = {el: symbols.count(el) for el in set(symbols)}
    units_ = counts.get("Li", 0) / spec.formula["Li"]
    if set(counts) != set(spec.formula) or any(counts[el] != n * units_ for el, n in spec.formula.items()):
        raise ValueError(f"{path}: composition {counts} is not a multiple of {material}'s {spec.formula}")
    atoms.pbc = True
    return atoms


def density_g_cm3(atoms: Atoms) -> float:
    return float(atoms.get_masses().sum() * 1.66053907 / atoms.get_volume())


def min_distance(atoms: Atoms) -> float:
    d = atoms.get_all_distances(mic=True)
    return float(d[np.triu_indices(len(atoms), 1)].min())


def prepare_start(protocol: ConductorProtocol, work: Path) -> Atoms:
    """The published cell with positions relaxed by CHGNet (cell fixed), cached in ``work/start.traj``; refused
    (``RuntimeError``) if the closest approach falls below 80 % of the published one (a collapse)."""
    path = work / "start.traj"
    if path.exists():
        return read(path)
    started = time.perf_counter()
    atoms = build_cell(protocol.material, protocol.cell_file)
    before = min_distance(atoms)
    atoms.calc = common.chgnet_calculator()
    e0 = float(atoms.get_potential_energy())
    FIRE(atoms, logfile=None).run(fmax=protocol.relax_fmax, steps=protocol.relax_steps)
    after = min_distance(atoms)
    if after < 0.8 * before:
        raise RuntimeError(f"{protocol.material}: the reference collapses the structure on relaxation (closest "
                           f"approach {before:.2f} -> {after:.2f} Å)")
    stress_GPa = atoms.get_stress(voigt=True)[:3] / units.GPa
    info = {"wall_s": time.perf_counter() - started, "n_atoms": len(atoms), "formula": atoms.get_chemical_formula(),
            "density_g_cm3": density_g_cm3(atoms), "cell_A_deg": atoms.cell.cellpar().tolist(),
            "min_distance_published_A": before, "min_distance_relaxed_A": after,
            "relaxation_eV_per_atom": (float(atoms.get_potential_energy()) - e0) / len(atoms),
            "stress_diagonal_GPa_at_published_cell": stress_GPa.tolist(),
            "structure_file": structure_path(protocol.material, protocol.cell_file).name,
            "structure_sha256": hashlib.sha256(structure_path(protocol.material,
                                                              protocol.cell_file).read_bytes()).hexdigest()}
    common.atomic_write(path, atoms, format="traj")
    (work / "start.json").write_text(json.dumps(info, indent=2))
    return read(path)


def _nose_hoover(atoms: Atoms, protocol: ConductorProtocol, temperature_K: float) -> NoseHooverChainNVT:
    return NoseHooverChainNVT(atoms, timestep=protocol.timestep_fs * units.fs, temperature_K=temperature_K,
                              tdamp=protocol.thermostat_damping_fs * units.fs)


def conserved_energy(dyn: NoseHooverChainNVT) -> float:
    """The chain's conserved quantity, E_pot + E_kin + thermostat energy (eV). ASE's own method asks the calculator
    for ``free_energy``, which CHGNet does not give, so the potential energy stands in for it."""
    atoms = dyn.atoms
    return float(atoms.get_potential_energy() + atoms.get_kinetic_energy()
                 + dyn._thermostat.get_thermostat_energy())


def run_trajectory(protocol: ConductorProtocol, work: Path, index: int) -> Path:
    """Run ``index`` (skipped if its file exists); returns the file path."""
    path = work / f"traj_{index:03d}.extxyz"
    if path.exists():
        return path
    import torch

    torch.set_num_threads(1)
    started = time.perf_counter()
    target, repeat = run_setting(protocol, index)
    rng = np.random.default_rng([protocol.seed, index])
    atoms = prepare_start(protocol, work)
    atoms.calc = common.chgnet_calculator()
    common.thermalize_momenta(atoms, temperature_K=target, rng=rng)
    Stationary(atoms)
    common.langevin(atoms, protocol.timestep_fs, target, protocol.friction_per_fs, rng).run(protocol.equilibrate_steps)
    Stationary(atoms)  # Langevin keeps the centre of mass fixed; this removes any rounding residue
    dyn = _nose_hoover(atoms, protocol, target)
    frames = [common.frame(atoms, index, 0, protocol.timestep_fs)]
    conserved = [conserved_energy(dyn)]
    frames[0].info.update(target_K=target, material=protocol.material)
    for step in range(1, protocol.n_frames):
        dyn.run(1)
        frames.append(common.frame(atoms, index, step, protocol.timestep_fs))
        frames[-1].info.update(target_K=target, material=protocol.material)
        conserved.append(conserved_energy(dyn))
        if step % 100 == 0:  # where a long run stands (the bar counts whole runs)
            (work / "progress.txt").write_text(f"run {index}: step {step}/{protocol.n_frames - 1}, "
                                               f"{time.perf_counter() - started:.0f} s\n")
    kinetic = np.array([a.get_kinetic_energy() for a in frames])
    t_ps = np.arange(len(frames)) * protocol.timestep_fs / 1000.0
    info = {"traj_id": index, "target_K": target, "repeat": repeat, "wall_s": time.perf_counter() - started,
            "mean_K": float(kinetic.mean() / (1.5 * units.kB * len(atoms))),
            "conserved_drift_meV_per_atom_ps": float(np.polyfit(t_ps, conserved, 1)[0] * 1000.0 / len(atoms))}
    (work / f"traj_{index:03d}.json").write_text(json.dumps(info))
    common.atomic_write(path, frames, format="extxyz")  # last: its existence marks the run done
    return path


def _worker(args: tuple[ConductorProtocol, str, int]) -> int:
    protocol, work, index = args
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # CHGNet's torch.tensor-from-tensor notice, every step
        run_trajectory(protocol, Path(work), index)
    return index


def assemble(protocol: ConductorProtocol, work: Path, out: Path) -> Path:
    """Pack all runs into ``out/<material>.extxyz.xz`` and write ``out/<material>.json``."""
    target, meta = common.pack_runs(protocol, work, out, protocol.material, "conserved_drift_meV_per_atom_ps")
    spec = MATERIALS[protocol.material]
    meta.update(
        description=(f"{protocol.material} ({spec.role} material of the GraNNField study), {meta['n_atoms']} atoms, "
                     f"NVT (Nosé-Hoover chain after a discarded Langevin equilibration) at "
                     f"{', '.join(f'{t:g}' for t in protocol.temperatures_K)} K, {protocol.runs_per_temperature} "
                     "independent run(s) each; CHGNet standing in for DFT"),
        structure_source=spec.source,
        start=json.loads((work / "start.json").read_text()),
        drift_of="the Nosé-Hoover chain's conserved energy",
    )
    (out / f"{protocol.material}.json").write_text(json.dumps(meta, indent=2) + "\n")
    return target


def generate(out: Path, protocol: ConductorProtocol, progress: bool = True) -> Path:
    """Run (or resume) the protocol and pack the result into ``out``; a resume must use the same protocol."""
    return common.generate_runs(out, protocol, f"{protocol.material} runs", prepare_start, _worker, assemble, progress)
