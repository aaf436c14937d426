"""The state of a batch of MD systems, and Maxwell-Boltzmann momenta.

All quantities in ASE units: positions Å, momenta amu·Å/ASE-time (as ``ase.Atoms.get_momenta``), masses amu,
energies eV, forces eV/Å. Systems are concatenated; ``system`` (sorted) says which system each atom is in.

Constraints (ASE's ``FixAtoms`` and ``FixCom``) travel as two extras, a per-atom bool ``fixed`` and a per-system
bool ``fix_com``, present only when some structure has a constraint. Steps keep momenta (and a learned core its
displacements) on the constraint surface with :meth:`MDState.constrain`: fixed atoms have zero momentum (so a
drift never moves them), and a ``fix_com`` system's free atoms have zero total momentum. Degrees of freedom count
them as ASE does (3 per fixed atom, 3 for FixCom); :meth:`MDState.to_atoms` gives the constraints back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms, FixCom
from torch import Tensor

from longmd.data.graph import move_tensor
from longmd.units import KB_EV_PER_K

FIXED, FIX_COM = "fixed", "fix_com"
"""Names of the constraint extras: per-atom ``fixed`` (FixAtoms) and per-system ``fix_com`` (FixCom), both bool."""
SUPPORTED_CONSTRAINTS = ("FixAtoms", "FixCom")


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

    @property
    def fixed(self) -> Tensor | None:
        """(N,) bool: atoms held by FixAtoms (None: no structure has any)."""
        return self.per_atom.get(FIXED)

    @property
    def fix_com(self) -> Tensor | None:
        """(B,) bool: systems whose centre of mass is held by FixCom (None: none is)."""
        return self.per_system.get(FIX_COM)

    def has_fixed_atoms(self) -> Tensor:
        """(B,) bool: systems with at least one fixed atom."""
        if self.fixed is None:
            return torch.zeros(self.n_systems, dtype=torch.bool, device=self.device)
        return per_system_sum(self.fixed.to(self.dtype), self.system, self.n_systems) > 0

    def com_frame(self, com_removed: bool = True) -> Tensor:
        """(B,) bool: systems whose temperature is taken in their centre-of-mass frame (3 dof fewer): FixCom
        ones, and with ``com_removed`` (total momentum conserved) those without fixed atoms (fixed atoms take
        up momentum, so there the whole kinetic energy counts, as in ASE)."""
        frame = torch.full((self.n_systems,), com_removed, dtype=torch.bool, device=self.device)
        if self.fixed is not None:
            frame = frame & ~self.has_fixed_atoms()
        return frame if self.fix_com is None else frame | self.fix_com

    def degrees_of_freedom(self, com_removed: bool = True) -> Tensor:
        """(B,) 3 N_b, minus 3 per fixed atom and 3 in the centre-of-mass frame (:meth:`com_frame`: FixCom, or
        the total momentum fixed at zero in NVE, SVR), as ``ase.Atoms.get_number_of_degrees_of_freedom``;
        at least 1."""
        return degrees_of_freedom(self.system, self.n_systems, self.com_frame(com_removed), self.fixed).to(self.dtype)

    def internal_momenta(self, com_removed: bool = True) -> Tensor:
        """(N, 3) momenta in each :meth:`com_frame` system's centre-of-mass frame (of its free atoms); the other
        systems' momenta as they are."""
        return remove_total_momentum(self.momenta, self.masses, self.system, self.n_systems,
                                     self.com_frame(com_removed), self.fixed)

    def temperature(self, com_removed: bool = True) -> Tensor:
        """(B,) instantaneous temperature, K: 2 E_kin / (dof k_B).

        With ``com_removed`` (total momentum conserved: NVE, SVR) E_kin is taken in each system's centre-of-mass
        frame with 3N - 3 degrees of freedom, so a drifting system (e.g. a molecule shot at a surface) is not
        reported as hot; otherwise (Langevin) the whole kinetic energy over 3N. Constraints count as in
        :meth:`degrees_of_freedom`, so a constrained frame reads as ``ase.Atoms.get_temperature`` reads it.
        """
        e_kin = kinetic_energy(self.internal_momenta(com_removed), self.masses, self.system, self.n_systems)
        return 2.0 * e_kin / (self.degrees_of_freedom(com_removed) * KB_EV_PER_K)

    def constrain(self, values: Tensor, momenta: bool = True) -> Tensor:
        """(N, 3) momenta (or, ``momenta=False``, displacements) obeying the constraints: zero on fixed atoms;
        in FixCom systems the free atoms' total momentum (mass-weighted displacement) removed. Unchanged
        without constraints."""
        fixed, fix_com = self.fixed, self.fix_com
        if fixed is not None:
            values = torch.where(fixed[:, None], torch.zeros_like(values), values)
        if fix_com is None:
            return values
        free = self.masses if fixed is None else torch.where(fixed, torch.zeros_like(self.masses), self.masses)
        total = per_system_sum(values if momenta else free[:, None] * values, self.system, self.n_systems)
        mass = per_system_sum(free, self.system, self.n_systems).clamp_min(torch.finfo(self.dtype).tiny)
        mean = total / mass[:, None]
        shift = (mean * fix_com[:, None])[self.system]
        return values - (free[:, None] * shift if momenta else shift * (free > 0)[:, None])

    def constrained(self) -> MDState:
        """The state with its momenta on the constraint surface (itself when it has no constraints)."""
        if self.fixed is None and self.fix_com is None:
            return self
        return self.replace(momenta=self.constrain(self.momenta))

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
        """Batch ASE Atoms (momenta from ``get_momenta()``, zero when absent). Forces are not cached. FixAtoms and
        FixCom become the constraint extras (see the module doc); any other constraint raises."""
        atoms_list = [atoms] if isinstance(atoms, Atoms) else list(atoms)
        if not atoms_list:
            raise ValueError("MDState.from_atoms: empty list of structures")
        per_atom, per_system = constraint_extras(atoms_list, device)

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
            per_atom=per_atom,
            per_system=per_system,
        )

    def to_atoms(self) -> list[Atoms]:
        """One ``ase.Atoms`` per system, with momenta and its FixAtoms / FixCom constraints; cached energy/forces
        attached as a single-point result."""
        s = self.detach().to("cpu")
        fixed, fix_com = s.fixed, s.fix_com
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
            constraints = [] if fixed is None or not fixed[sl].any() else [FixAtoms(mask=fixed[sl].numpy())]
            if fix_com is not None and bool(fix_com[b]):
                constraints.append(FixCom())
            if constraints:
                atoms.set_constraint(constraints)
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


def constraint_extras(atoms_list: Sequence[Atoms], device: torch.device | str = "cpu"
                      ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """The ``fixed`` / ``fix_com`` extras of the structures' FixAtoms and FixCom constraints (empty dicts when
    none has a constraint). Any other constraint raises, naming it: longmd would otherwise ignore it."""
    if not any(a.constraints for a in atoms_list):
        return {}, {}
    fixed, fix_com = [], []
    for k, atoms in enumerate(atoms_list):
        mask, com = np.zeros(len(atoms), dtype=bool), False
        for c in atoms.constraints:
            if isinstance(c, FixAtoms):
                mask[c.get_indices()] = True
            elif isinstance(c, FixCom):
                com = True
            else:
                raise ValueError(
                    f"structure {k} carries the ASE constraint {type(c).__name__}, which longmd's integrators do "
                    f"not apply (they apply {' and '.join(SUPPORTED_CONSTRAINTS)}): remove it (del "
                    "atoms.constraints) to run unconstrained, or run that constrained MD with ASE through "
                    "longmd's calculator")
        fixed.append(mask)
        fix_com.append(com)
    return ({FIXED: torch.from_numpy(np.concatenate(fixed)).to(device)},
            {FIX_COM: torch.tensor(fix_com, dtype=torch.bool, device=device)})


def per_system_sum(values: Tensor, system: Tensor, n_systems: int) -> Tensor:
    """(B, ...) sums of the (N, ...) values over each system's atoms."""
    return values.new_zeros((n_systems, *values.shape[1:])).index_add(0, system, values)


def kinetic_energy(momenta: Tensor, masses: Tensor, system: Tensor, n_systems: int) -> Tensor:
    """(B,) sum of p^2 / 2m per system, eV."""
    return per_system_sum(0.5 * (momenta * momenta).sum(-1) / masses, system, n_systems)


def degrees_of_freedom(system: Tensor, n_systems: int, com_removed: bool | Tensor = True,
                       fixed: Tensor | None = None) -> Tensor:
    """(B,) long: 3 N_b, minus 3 per ``fixed`` atom, minus 3 where ``com_removed`` (a bool or (B,) bool: the
    total momentum is fixed) when more than 3 remain; at least 1."""
    n = 3 * torch.bincount(system, minlength=n_systems)
    if fixed is not None:
        n = n - 3 * per_system_sum(fixed.long(), system, n_systems)
    n = torch.where(torch.as_tensor(com_removed, device=n.device) & (n > 3), n - 3, n)
    return n.clamp_min(1)


def remove_total_momentum(momenta: Tensor, masses: Tensor, system: Tensor, n_systems: int,
                          where: Tensor | None = None, fixed: Tensor | None = None) -> Tensor:
    """Momenta minus m_i times the centre-of-mass velocity of their system (total momentum zero), in the
    systems ``where`` (B,) bool (default all); ``fixed`` atoms are left out of the sum and keep their momenta."""
    free = masses if fixed is None else torch.where(fixed, torch.zeros_like(masses), masses)
    total_p = per_system_sum(momenta if fixed is None else momenta * (free > 0)[:, None], system, n_systems)
    total_m = per_system_sum(free, system, n_systems).clamp_min(torch.finfo(masses.dtype).tiny)
    velocity = total_p / total_m[:, None]
    if where is not None:
        velocity = velocity * where[:, None]
    return momenta - free[:, None] * velocity[system]
