"""The state of a batch of MD systems, and Maxwell-Boltzmann momenta.

All quantities in ASE units: positions Å, momenta amu·Å/ASE-time (as ``ase.Atoms.get_momenta``), masses amu,
energies eV, forces eV/Å. Systems are concatenated; ``system`` (sorted) says which system each atom is in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from torch import Tensor

from longmd.data.graph import move_tensor
from longmd.units import KB_EV_PER_K


@dataclass
class MDState:
    """Positions, momenta and constants of B systems; forces/energy cached at the current positions.

    Attributes:
        positions: (N, 3) Å (unwrapped: atoms are never folded back into the cell).
        momenta: (N, 3) amu·Å/ASE-time.
        masses: (N,) amu. numbers: (N,) atomic numbers (long).
        cell: (B, 3, 3) rows are lattice vectors, Å. pbc: (B, 3) bool. system: (N,) long, sorted.
        forces: (N, 3) eV/Å at ``positions`` or None (stale, or a propagator without a force field).
        energy: (B,) eV or None.
        per_atom, per_system: optional named extras, each (N, ...) or (B, ...) (e.g. a per-step uncertainty,
            the energy a filter conserves); carried through :meth:`select`, :meth:`to` and checkpoints.
        step: propagator steps taken since the rollout's start state (a plain int; neighbour lists given per
            step and gradient truncation read it).
    """

    positions: Tensor
    momenta: Tensor
    masses: Tensor
    numbers: Tensor
    cell: Tensor
    pbc: Tensor
    system: Tensor
    forces: Tensor | None = None
    energy: Tensor | None = None
    per_atom: dict[str, Tensor] = field(default_factory=dict)
    per_system: dict[str, Tensor] = field(default_factory=dict)
    step: int = 0

    TENSORS = ("positions", "momenta", "masses", "numbers", "cell", "pbc", "system", "forces", "energy")
    """The fixed tensor fields (extras and ``step`` aside)."""

    @property
    def n_systems(self) -> int:
        return int(self.cell.shape[0])

    @property
    def n_atoms(self) -> int:
        return int(self.positions.shape[0])

    @property
    def device(self) -> torch.device:
        return self.positions.device

    @property
    def dtype(self) -> torch.dtype:
        return self.positions.dtype

    @property
    def velocities(self) -> Tensor:
        """(N, 3) Å/ASE-time."""
        return self.momenta / self.masses[:, None]

    def atoms_per_system(self) -> Tensor:
        """(B,) number of atoms of each system."""
        return torch.bincount(self.system, minlength=self.n_systems)

    def kinetic_energy(self) -> Tensor:
        """(B,) kinetic energy per system, eV."""
        return kinetic_energy(self.momenta, self.masses, self.system, self.n_systems)

    def degrees_of_freedom(self, com_removed: bool = True) -> Tensor:
        """(B,) 3 N_b, minus 3 when the total momentum is fixed at zero (NVE, SVR); at least 1."""
        return degrees_of_freedom(self.system, self.n_systems, com_removed).to(self.dtype)

    def temperature(self, com_removed: bool = True) -> Tensor:
        """(B,) instantaneous temperature, K: 2 E_kin / (dof k_B).

        With ``com_removed`` (total momentum conserved: NVE, SVR) E_kin is taken in each system's centre-of-mass
        frame with 3N - 3 degrees of freedom, so a drifting system (e.g. a molecule shot at a surface) is not
        reported as hot; otherwise (Langevin) the whole kinetic energy over 3N.
        """
        return temperature(self.momenta, self.masses, self.system, self.n_systems, com_removed)

    def detach(self) -> MDState:
        """A copy whose tensors carry no autograd graph (same storage)."""
        return self.map(lambda t: t.detach())

    def clone(self) -> MDState:
        """A detached deep copy."""
        return self.map(lambda t: t.detach().clone())

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> MDState:
        """Move to a device; floating fields are cast to ``dtype`` when given."""

        return self.map(lambda t: move_tensor(t, device, dtype))

    def map(self, fn) -> MDState:
        """Apply ``fn`` to every tensor field and extra (None stays None)."""
        tensors = {k: (None if (v := getattr(self, k)) is None else fn(v)) for k in self.TENSORS}
        return MDState(**tensors, per_atom={k: fn(v) for k, v in self.per_atom.items()},
                       per_system={k: fn(v) for k, v in self.per_system.items()}, step=self.step)

    def replace(self, **changes) -> MDState:
        return replace(self, **changes)

    def with_extras(self, per_atom: dict[str, Tensor] | None = None,
                    per_system: dict[str, Tensor] | None = None) -> MDState:
        """A copy with extras added or replaced (the others kept)."""
        return self.replace(per_atom={**self.per_atom, **(per_atom or {})},
                            per_system={**self.per_system, **(per_system or {})})

    def state_dict(self) -> dict:
        """Plain tensors on the CPU (and ``step``), for checkpoints: :meth:`from_state_dict` inverts it."""
        cpu = self.detach().to("cpu")
        return {**{k: getattr(cpu, k) for k in self.TENSORS}, "per_atom": dict(cpu.per_atom),
                "per_system": dict(cpu.per_system), "step": self.step}

    @classmethod
    def from_state_dict(cls, data: dict, device: torch.device | str = "cpu") -> MDState:
        """The state :meth:`state_dict` wrote (files from before extras existed load too)."""
        state = cls(**{k: data.get(k) for k in cls.TENSORS}, per_atom=dict(data.get("per_atom") or {}),
                    per_system=dict(data.get("per_system") or {}), step=int(data.get("step", 0)))
        return state.to(device)

    def select(self, systems: Sequence[int] | Tensor) -> MDState:
        """The sub-batch of the given systems (in that order), renumbered 0..len-1."""
        idx = torch.as_tensor(systems, dtype=torch.long, device=self.device).reshape(-1)
        counts = self.atoms_per_system()
        starts = torch.cumsum(counts, 0) - counts
        new_counts = counts[idx]
        new_starts = torch.cumsum(new_counts, 0) - new_counts
        new_system = torch.repeat_interleave(torch.arange(len(idx), device=self.device), new_counts)
        atom_idx = torch.arange(len(new_system), device=self.device) + (starts[idx] - new_starts)[new_system]
        return MDState(
            positions=self.positions[atom_idx],
            momenta=self.momenta[atom_idx],
            masses=self.masses[atom_idx],
            numbers=self.numbers[atom_idx],
            cell=self.cell[idx],
            pbc=self.pbc[idx],
            system=new_system,
            forces=None if self.forces is None else self.forces[atom_idx],
            energy=None if self.energy is None else self.energy[idx],
            per_atom={k: v[atom_idx] for k, v in self.per_atom.items()},
            per_system={k: v[idx] for k, v in self.per_system.items()},
            step=self.step,
        )

    @classmethod
    def from_atoms(
        cls,
        atoms: Atoms | Sequence[Atoms],
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float64,
    ) -> MDState:
        """Batch ASE Atoms (momenta from ``get_momenta()``, zero when absent). Forces are not cached."""
        atoms_list = [atoms] if isinstance(atoms, Atoms) else list(atoms)
        if not atoms_list:
            raise ValueError("MDState.from_atoms: empty list of structures")

        def cat(arrays: list[np.ndarray]) -> Tensor:
            return torch.from_numpy(np.concatenate(arrays)).to(device=device)

        counts = [len(a) for a in atoms_list]
        return cls(
            positions=cat([a.get_positions() for a in atoms_list]).to(dtype),
            momenta=cat([a.get_momenta() for a in atoms_list]).to(dtype),
            masses=cat([a.get_masses() for a in atoms_list]).to(dtype),
            numbers=cat([a.numbers.astype(np.int64) for a in atoms_list]),
            cell=torch.tensor(np.stack([a.cell.array for a in atoms_list]), dtype=dtype, device=device),
            pbc=torch.tensor(np.stack([a.pbc for a in atoms_list]), dtype=torch.bool, device=device),
            system=torch.repeat_interleave(torch.arange(len(counts), device=device),
                                           torch.tensor(counts, device=device)),
        )

    def to_atoms(self) -> list[Atoms]:
        """One ``ase.Atoms`` per system, with momenta; cached energy/forces attached as a single-point result."""
        s = self.detach().to("cpu")
        counts = s.atoms_per_system().tolist()
        starts = (np.cumsum(counts) - np.asarray(counts, dtype=int)).astype(int)
        out = []
        for b, (a0, n) in enumerate(zip(starts, counts, strict=True)):
            sl = slice(int(a0), int(a0) + n)
            atoms = Atoms(
                numbers=s.numbers[sl].numpy(),
                positions=s.positions[sl].double().numpy(),
                cell=s.cell[b].double().numpy(),
                pbc=s.pbc[b].numpy(),
                masses=s.masses[sl].double().numpy(),
            )
            atoms.set_momenta(s.momenta[sl].double().numpy(), apply_constraint=False)
            if s.forces is not None and s.energy is not None:
                atoms.calc = SinglePointCalculator(
                    atoms, energy=float(s.energy[b]), forces=s.forces[sl].double().numpy()
                )
            out.append(atoms)
        return out


def maxwell_boltzmann_momenta(
    masses: Tensor,
    system: Tensor,
    temperature_K: float | Tensor,
    generator: torch.Generator | None = None,
    exact: bool = False,
    n_systems: int | None = None,
) -> Tensor:
    """(N, 3) Maxwell-Boltzmann momenta with zero total momentum in every system.

    ``temperature_K`` is a float or (B,) per system. With ``exact=True`` each system is rescaled so its
    temperature (dof = 3 N_b - 3) equals the target exactly. Single-atom systems get zero momentum.
    """
    n_sys = int(n_systems if n_systems is not None else (int(system.max()) + 1 if len(system) else 0))
    dtype, device = masses.dtype, masses.device
    t = torch.as_tensor(temperature_K, dtype=dtype, device=device).expand(n_sys)
    kt = (KB_EV_PER_K * t)[system]
    xi = torch.randn(masses.shape[0], 3, generator=generator, dtype=dtype, device=device)
    p = xi * torch.sqrt(masses * kt)[:, None]
    p = remove_total_momentum(p, masses, system, n_sys)
    movable = torch.bincount(system, minlength=n_sys) > 1  # a lone atom has no dof once its momentum is removed
    if exact:
        dof = degrees_of_freedom(system, n_sys, com_removed=True).to(dtype)
        current = 2.0 * kinetic_energy(p, masses, system, n_sys) / (dof * KB_EV_PER_K)
        scale = torch.where(current > 0, torch.sqrt(t / current.clamp_min(1e-300)), torch.zeros_like(t))
        p = p * scale[system][:, None]
    return torch.where(movable[system][:, None], p, torch.zeros_like(p))


def kinetic_energy(momenta: Tensor, masses: Tensor, system: Tensor, n_systems: int) -> Tensor:
    """(B,) sum of p^2 / 2m per system, eV."""
    per_atom = 0.5 * (momenta * momenta).sum(-1) / masses
    return torch.zeros(n_systems, dtype=momenta.dtype, device=momenta.device).index_add(0, system, per_atom)


def temperature(momenta: Tensor, masses: Tensor, system: Tensor, n_systems: int, com_removed: bool = True) -> Tensor:
    """(B,) instantaneous temperature, K (see :meth:`MDState.temperature`)."""
    if com_removed:
        momenta = remove_total_momentum(momenta, masses, system, n_systems)
    dof = degrees_of_freedom(system, n_systems, com_removed).to(momenta.dtype)
    return 2.0 * kinetic_energy(momenta, masses, system, n_systems) / (dof * KB_EV_PER_K)


def degrees_of_freedom(system: Tensor, n_systems: int, com_removed: bool = True) -> Tensor:
    """(B,) long: 3 N_b, minus 3 when the total momentum is fixed (for N_b > 1); at least 1."""
    n = 3 * torch.bincount(system, minlength=n_systems)
    if com_removed:
        n = torch.where(n > 3, n - 3, n)
    return n.clamp_min(1)


def remove_total_momentum(momenta: Tensor, masses: Tensor, system: Tensor, n_systems: int) -> Tensor:
    """Momenta minus m_i times the centre-of-mass velocity of their system (total momentum zero)."""
    total_p = torch.zeros(n_systems, 3, dtype=momenta.dtype, device=momenta.device).index_add(0, system, momenta)
    total_m = torch.zeros(n_systems, dtype=masses.dtype, device=masses.device).index_add(0, system, masses)
    return momenta - masses[:, None] * (total_p / total_m[:, None])[system]
