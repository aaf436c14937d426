"""Generate the embedded example: H2 impinging on a Pd6 cluster anchored in a graphene vacancy.

CHGNet (weights ship in its PyPI wheel, so it runs offline) stands in for DFT. Protocol, after the DT paper:

1. build a 5x5 graphene sheet with one carbon vacancy (49 C) and a Pd6 octahedron with one vertex in the
   vacancy; relax it (FIRE);
2. thermalise the substrate at 300 K (Langevin), then give every trajectory its own short Langevin run
   with its own seed so the starts are decorrelated;
3. place an H2 molecule (random orientation, random lateral offset around the top Pd atom) a few Å above
   the cluster, moving straight down with the trajectory's incidence energy (spread over a range so the
   data holds approach, scattering, adsorption and dissociation), and run NVE at 0.5 fs, storing every
   step with positions, momenta, forces and energy.

Trajectories are run in parallel single-threaded worker processes, each written atomically, so an
interrupted run resumes where it stopped. ``assemble`` packs them into one compressed extxyz file (values
rounded to a precision far below the reference's own error so the file compresses well) plus metadata.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.build import graphene
from ase.io import read
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary
from ase.md.verlet import VelocityVerlet
from ase.optimize import FIRE

from longmd.datagen.common import atomic_write as _atomic_write
from longmd.datagen.common import chgnet_calculator as _calculator
from longmd.datagen.common import (
    energy_drift_meV_per_atom_ps,
    frame,
    langevin,
    rounded,
    run_all,
    thermalize_momenta,
)
from longmd.datagen.common import reference_versions as _reference_versions

DATASET_NAME = "h2_pd6_graphene"


@dataclass
class Protocol:
    """Every choice of the reference runs (stored in the metadata)."""

    n_trajectories: int = 16
    n_frames: int = 600  # stored frames per trajectory, first one included
    timestep_fs: float = 0.5
    incidence_eV: tuple[float, float] = (0.125, 1.5)  # linearly spread over the trajectories
    start_height_A: float = 3.5  # H2 centre above the top Pd atom
    lateral_offset_A: float = 1.5  # radius of the disc of aim points around the top Pd atom
    h2_bond_A: float = 0.75
    temperature_K: float = 300.0
    friction_per_fs: float = 0.02
    relax_fmax: float = 0.05
    relax_steps: int = 300
    thermalise_steps: int = 400
    decorrelate_steps: int = 60
    vacuum_A: float = 20.0  # cell height above the sheet's plane is ~this
    seed: int = 2026
    workers: int = 2
    round_positions: int = 5  # decimals kept in the packed file (Å)
    round_momenta: int = 6  # amu·Å/ASE-time
    round_forces: int = 4  # eV/Å
    extra: dict = field(default_factory=dict)


def build_substrate(protocol: Protocol) -> Atoms:
    """5x5 graphene with a single vacancy and a Pd6 octahedron anchored in it (not yet relaxed)."""
    sheet = graphene(formula="C2", a=2.46, thickness=0.0, size=(5, 5, 1), vacuum=None)
    z0 = 6.0
    cell = sheet.get_cell()
    cell[2] = [0.0, 0.0, z0 + protocol.vacuum_A]
    sheet.set_cell(cell)
    sheet.positions[:, 2] = z0
    centre = cell[0] / 2 + cell[1] / 2
    vacancy = int(np.argmin(np.linalg.norm(sheet.positions[:, :2] - centre[:2], axis=1)))
    site = sheet.positions[vacancy].copy()
    del sheet[vacancy]
    half_diagonal = 2.75 / math.sqrt(2)  # Pd-Pd 2.75 Å
    octahedron = np.array(
        [[0, 0, -1], [1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1]], dtype=float
    ) * half_diagonal
    octahedron += site + np.array([0.0, 0.0, 1.3 + half_diagonal])  # bottom vertex 1.3 Å above the sheet
    atoms = sheet + Atoms("Pd6", positions=octahedron)
    atoms.pbc = (True, True, False)
    return atoms


def _periodic_copy(atoms: Atoms) -> Atoms:
    # CHGNet works on 3D-periodic structures; the cell height leaves ~20 Å of vacuum, larger than its cutoff.
    out = atoms.copy()
    out.pbc = True
    return out


def _langevin(atoms: Atoms, protocol: Protocol, rng: np.random.Generator) -> Langevin:
    """ASE Langevin at the protocol's temperature and friction (centre of mass fixed, as the example was made)."""
    return langevin(atoms, protocol.timestep_fs, protocol.temperature_K, protocol.friction_per_fs, rng)


def prepare_substrate(protocol: Protocol, work: Path) -> Atoms:
    """Relax and thermalise the substrate once; cached in ``work/substrate.traj``."""
    path = work / "substrate.traj"
    if path.exists():
        return read(path)
    atoms = _periodic_copy(build_substrate(protocol))
    atoms.calc = _calculator()
    FIRE(atoms, logfile=None).run(fmax=protocol.relax_fmax, steps=protocol.relax_steps)
    rng = np.random.default_rng(protocol.seed)
    thermalize_momenta(atoms, temperature_K=protocol.temperature_K, rng=rng)
    Stationary(atoms)
    _langevin(atoms, protocol, rng).run(protocol.thermalise_steps)
    _atomic_write(path, atoms, format="traj")
    return read(path)


def incidence_energies(protocol: Protocol) -> np.ndarray:
    """Incidence energy (eV) of every trajectory."""
    lo, hi = protocol.incidence_eV
    return np.linspace(lo, hi, protocol.n_trajectories)


def _add_h2(substrate: Atoms, protocol: Protocol, energy_eV: float, rng: np.random.Generator) -> Atoms:
    pd_top = substrate.positions[[a.index for a in substrate if a.symbol == "Pd"]]
    top = pd_top[np.argmax(pd_top[:, 2])]
    radius = protocol.lateral_offset_A * math.sqrt(rng.uniform())
    angle = rng.uniform(0, 2 * math.pi)
    centre = top + np.array([radius * math.cos(angle), radius * math.sin(angle), protocol.start_height_A])
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    h2 = Atoms("H2", positions=[centre - axis * protocol.h2_bond_A / 2, centre + axis * protocol.h2_bond_A / 2])
    mass = h2.get_masses().sum()
    speed = math.sqrt(2 * energy_eV / mass)  # Å per ASE time unit
    h2.set_momenta(np.outer(h2.get_masses(), [0.0, 0.0, -speed]))
    return substrate + h2


def _frame(atoms: Atoms, traj_id: int, step: int, protocol: Protocol) -> Atoms:
    return frame(atoms, traj_id, step, protocol.timestep_fs, pbc=(True, True, False))


def run_trajectory(protocol: Protocol, work: Path, index: int) -> Path:
    """Run trajectory ``index`` (skipped if its file exists); returns the file path."""
    path = work / f"traj_{index:03d}.extxyz"
    if path.exists():
        return path
    import torch

    torch.set_num_threads(1)
    rng = np.random.default_rng([protocol.seed, index])
    atoms = _periodic_copy(prepare_substrate(protocol, work))
    atoms.calc = _calculator()
    _langevin(atoms, protocol, rng).run(protocol.decorrelate_steps)
    atoms = _periodic_copy(_add_h2(atoms, protocol, float(incidence_energies(protocol)[index]), rng))
    atoms.calc = _calculator()
    frames = [_frame(atoms, index, 0, protocol)]
    dyn = VelocityVerlet(atoms, timestep=protocol.timestep_fs * units.fs)
    for step in range(1, protocol.n_frames):
        dyn.run(1)
        frames.append(_frame(atoms, index, step, protocol))
    _atomic_write(path, frames, format="extxyz")
    return path


def _worker(args: tuple[Protocol, str, int]) -> int:
    protocol, work, index = args
    run_trajectory(protocol, Path(work), index)
    return index


def assemble(protocol: Protocol, work: Path, out: Path) -> Path:
    """Pack all trajectories into ``out/h2_pd6_graphene.extxyz.xz`` and write ``metadata.json``."""
    frames: list[Atoms] = []
    per_traj = []
    energies = incidence_energies(protocol)
    for index in range(protocol.n_trajectories):
        traj = read(work / f"traj_{index:03d}.extxyz", index=":")
        h = [a.index for a in traj[0] if a.symbol == "H"]
        hh_final = float(traj[-1].get_distance(h[0], h[1], mic=True))
        per_traj.append(
            {
                "traj_id": index,
                "incidence_eV": float(energies[index]),
                "drift_meV_per_atom_ps": energy_drift_meV_per_atom_ps(traj, protocol.timestep_fs),
                "final_HH_distance_A": hh_final,
                "min_H_height_above_top_Pd_A": float(
                    min(a.positions[h, 2].min() - a.positions[a.numbers == 46, 2].max() for a in traj)
                ),
            }
        )
        for atoms in traj:
            frames.append(rounded(atoms, protocol))
    target = out / f"{DATASET_NAME}.extxyz.xz"
    out.mkdir(parents=True, exist_ok=True)
    _atomic_write(target, frames, format="extxyz")
    drifts = [abs(t["drift_meV_per_atom_ps"]) for t in per_traj]
    meta = {
        "name": DATASET_NAME,
        "description": "H2 impinging on a Pd6 cluster anchored in a single vacancy of 5x5 graphene "
        "(49 C + 6 Pd + 2 H); NVE reference trajectories with CHGNet standing in for DFT.",
        "reference": _reference_versions(),
        "protocol": asdict(protocol),
        "units": {"positions": "Å", "energy": "eV", "forces": "eV/Å", "momenta": "amu·Å/ASE-time"},
        "n_frames": len(frames),
        "n_atoms": len(frames[0]),
        "max_abs_drift_meV_per_atom_ps": max(drifts),
        "mean_abs_drift_meV_per_atom_ps": float(np.mean(drifts)),
        "trajectories": per_traj,
    }
    (out / f"{DATASET_NAME}.json").write_text(json.dumps(meta, indent=2) + "\n")
    return target


def generate(out: Path, protocol: Protocol | None = None, progress: bool = True) -> Path:
    """Run (or resume) the whole protocol and pack the result into ``out``."""
    from tqdm import tqdm

    protocol = protocol or Protocol()
    work = Path(out) / "work"
    work.mkdir(parents=True, exist_ok=True)
    (work / "protocol.json").write_text(json.dumps(asdict(protocol), indent=2))
    prepare_substrate(protocol, work)
    todo = [i for i in range(protocol.n_trajectories) if not (work / f"traj_{i:03d}.extxyz").exists()]
    bar = tqdm(total=protocol.n_trajectories, initial=protocol.n_trajectories - len(todo), disable=not progress,
               desc="reference trajectories")
    run_all(todo, _worker, lambda i: (protocol, str(work), i), protocol.workers, bar)
    bar.close()
    return assemble(protocol, work, Path(out))
