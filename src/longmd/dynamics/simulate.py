"""Long MD runs of batched replicas: the shared :func:`~longmd.dynamics.rollout.rollout` plus what users
need around it: Maxwell-Boltzmann start, Verlet lists with a skin, thermo log (CSV), trajectories (extxyz and
ASE .traj), a plot of energies and temperature, a progress bar and per-replica blow-up detection.

A replica whose atoms come closer than ``min_distance``, whose temperature exceeds ``max_temperature_K`` or
whose state turns non-finite is stopped with a message (reason, step); its last good frame is kept (and
written). It is dropped from the batch and the others continue: every system is independent, so survivors
follow exactly the trajectory they would have followed alone (NVE; thermostat noise draws differ).
"""

from __future__ import annotations

import csv
import json
import logging
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import ase.io
import numpy as np
import torch
from ase import Atoms
from torch import Tensor, nn
from tqdm.auto import tqdm

from longmd.data.graph import edge_vectors
from longmd.dynamics.integrators import make_integrator
from longmd.dynamics.neighbor_policy import VerletNeighbors
from longmd.dynamics.rollout import rollout
from longmd.dynamics.state import MDState, maxwell_boltzmann_momenta

logger = logging.getLogger(__name__)

THERMO_COLUMNS = ("step", "time_fs", "system", "E_pot", "E_kin", "E_tot", "T")


@dataclass
class ReplicaStop:
    """Why and when a replica was stopped; ``frame`` is its last good frame (written to ``frame_path``)."""

    replica: int
    step: int
    time_fs: float
    reason: str
    message: str
    frame: Atoms
    frame_path: str | None = None


@dataclass
class SimulationResult:
    """Outcome of :func:`simulate`.

    Attributes:
        state: final state of the surviving replicas; ``replicas`` their ids (system b of ``state`` is replica
            ``replicas[b]``). final_atoms: the last frame of every replica (last good one for stopped replicas).
        stopped: replicas that blew up. steps: last step reached (all replicas stopped: earlier than asked).
        wall_s, steps_per_s, ns_per_day: speed (all replicas).
        neighbor_builds: Verlet-list builds. files: name -> path of what was written.
    """

    state: MDState
    replicas: list[int]
    final_atoms: list[Atoms]
    stopped: list[ReplicaStop]
    steps: int
    timestep_fs: float
    wall_s: float
    neighbor_builds: int
    files: dict[str, str] = field(default_factory=dict)

    @property
    def steps_per_s(self) -> float:
        return self.steps / max(self.wall_s, 1e-12)

    @property
    def ns_per_day(self) -> float:
        return self.steps_per_s * self.timestep_fs * 1e-6 * 86400.0

    def summary(self) -> str:
        n = len(self.final_atoms)
        lines = [
            f"{self.steps} steps x {n} replica(s) in {self.wall_s:.1f} s: {self.steps_per_s:.1f} steps/s, "
            f"{self.ns_per_day:.3f} ns/day per replica, {self.neighbor_builds} neighbour-list builds",
            f"{n - len(self.stopped)} of {n} replica(s) ran to the end",
        ]
        lines += [f"  {s.message}" for s in self.stopped]
        return "\n".join(lines)


def _model_dtype(model: nn.Module) -> torch.dtype:
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.float64


def _initial_state(
    init: Atoms | Sequence[Atoms] | MDState, replicas: int, device: str, dtype: torch.dtype
) -> MDState:
    if isinstance(init, MDState):
        state = init.to(device=device, dtype=dtype)
        return state if replicas == 1 else state.select(
            torch.arange(state.n_systems).repeat_interleave(replicas))
    atoms_list = [init] if isinstance(init, Atoms) else list(init)
    return MDState.from_atoms([a for a in atoms_list for _ in range(replicas)], device=device, dtype=dtype)


def _per_system_any(flags: Tensor, system: Tensor, n_systems: int) -> Tensor:
    return torch.zeros(n_systems, dtype=torch.long, device=flags.device).index_add(0, system, flags.long()) > 0


class MinDistance:
    """(B,) shortest interatomic distance of each system within a neighbour list (inf where no pair).

    The periodic offsets S·cell of a list are computed once per list (the cell is fixed between builds).
    """

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._offsets: Tensor | None = None

    def __call__(self, state: MDState, edges: tuple[Tensor, Tensor] | None) -> Tensor:
        out = torch.full((state.n_systems,), float("inf"), dtype=state.dtype, device=state.device)
        if edges is None or edges[0].shape[1] == 0:
            return out
        edge_index, shifts = edges
        key = (id(edge_index), id(shifts), edge_index.shape[1])
        if key != self._key:
            zero = torch.zeros_like(state.positions)
            self._offsets = edge_vectors(zero, state.cell.detach(), state.system, edge_index, shifts)
            self._key = key
        x = state.positions.detach()
        d = (x[edge_index[1]] - x[edge_index[0]] + self._offsets).norm(dim=-1)
        return out.scatter_reduce(0, state.system[edge_index[0]], d, reduce="amin")


def blow_ups(
    state: MDState, temperature: Tensor, d_min: Tensor, min_distance: float, max_temperature_K: float
) -> list[tuple[int, str, str]]:
    """(system, reason, detail) for every system of ``state`` that has blown up (``d_min``: (B,) Å)."""
    finite_atom = (
        torch.isfinite(state.positions).all(-1)
        & torch.isfinite(state.momenta).all(-1)
        & torch.isfinite(state.forces).all(-1)
    )
    nonfinite = _per_system_any(~finite_atom, state.system, state.n_systems) | ~torch.isfinite(state.energy)
    out = []
    for b in range(state.n_systems):
        if nonfinite[b]:
            out.append((b, "nan", "non-finite positions, momenta, forces or energy"))
        elif d_min[b] < min_distance:
            out.append((b, "min_distance", f"atoms {float(d_min[b]):.3f} Å apart (< {min_distance} Å)"))
        elif temperature[b] > max_temperature_K:
            out.append((b, "temperature", f"T = {float(temperature[b]):.0f} K (> {max_temperature_K} K)"))
    return out


class _ThermoHistory:
    """Thermo values of every replica, thinned (every other point dropped) past ``max_points`` for plotting."""

    def __init__(self, n_replicas: int, max_points: int = 4000) -> None:
        self.n, self.max_points = n_replicas, max_points
        self.time: list[float] = []
        self.values: list[np.ndarray] = []  # (4, n_replicas): E_pot, E_kin, E_tot, T
        self.stride, self._seen = 1, 0

    def add(self, time_fs: float, replicas: list[int], values: np.ndarray) -> None:
        self._seen += 1
        if (self._seen - 1) % self.stride:
            return
        row = np.full((4, self.n), np.nan)
        row[:, replicas] = values
        self.time.append(time_fs)
        self.values.append(row)
        if len(self.time) > self.max_points:
            self.time, self.values, self.stride = self.time[::2], self.values[::2], 2 * self.stride

    def plot(self, path: Path, max_lines: int = 16) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        t = np.asarray(self.time)
        v = np.stack(self.values) if self.values else np.zeros((0, 4, self.n))
        fig = Figure(figsize=(7, 9))
        FigureCanvasAgg(fig)
        labels = ("E_pot (eV)", "E_kin (eV)", "E_tot (eV)", "T (K)")
        axes = fig.subplots(4, 1, sharex=True)
        for k, ax in enumerate(axes):
            for r in range(min(self.n, max_lines)):
                ax.plot(t, v[:, k, r], lw=0.8, label=f"replica {r}" if k == 0 and self.n <= 8 else None)
            ax.set_ylabel(labels[k])
        axes[-1].set_xlabel("time (fs)")
        if self.n <= 8:
            axes[0].legend(fontsize=7)
        title = "thermo" + (f" (first {max_lines} of {self.n} replicas)" if self.n > max_lines else "")
        axes[0].set_title(title)
        fig.tight_layout()
        fig.savefig(path, dpi=110)


def simulate(
    model: nn.Module,
    init: Atoms | Sequence[Atoms] | MDState,
    steps: int,
    timestep_fs: float = 0.5,
    ensemble: str = "nve",
    temperature_K: float | None = None,
    out_dir: str | Path | None = None,
    log_every: int = 10,
    traj_every: int = 10,
    replicas: int = 1,
    seed: int = 0,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
    friction_per_fs: float = 0.01,
    tau_fs: float = 100.0,
    skin: float = 1.0,
    init_velocities: str = "auto",
    min_distance: float = 0.5,
    max_temperature_K: float = 1.0e4,
    progress: bool = True,
) -> SimulationResult:
    """Run ``steps`` MD steps of ``model`` for every structure (x ``replicas``), batched.

    Args:
        init: structure(s) (momenta from the Atoms) or an :class:`MDState`. Replica ids run structure-major:
            replica ``k * replicas + r`` is copy r of structure k.
        ensemble: ``"nve"``, ``"langevin"`` (OBABO, ``friction_per_fs``) or ``"svr"`` (Bussi, ``tau_fs``).
        temperature_K: thermostat target; also the temperature of drawn initial velocities.
        init_velocities: ``"auto"`` draws Maxwell-Boltzmann momenta (zero total momentum) for systems that have
            none when ``temperature_K`` is given; ``"maxwell-boltzmann"`` always draws; ``"given"`` never.
        out_dir: where ``thermo.csv``, ``thermo.png``, ``traj_XXX.extxyz`` / ``.traj`` (every ``traj_every``
            steps), ``stopped_XXX.extxyz`` (last good frame of a stopped replica) and ``summary.json`` go;
            None writes nothing.
        device, dtype: where and in which precision to run (dtype default: the model's). The model is moved.
        skin: Verlet-list skin, Å. min_distance, max_temperature_K: blow-up thresholds (Å, K).
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if replicas < 1:
        raise ValueError(f"replicas must be >= 1, got {replicas}")
    if init_velocities not in ("auto", "maxwell-boltzmann", "given"):
        raise ValueError(f"init_velocities must be auto | maxwell-boltzmann | given, got {init_velocities!r}")
    dtype = dtype or _model_dtype(model)
    model = model.to(device)
    state = _initial_state(init, replicas, device, dtype)
    integrator = make_integrator(ensemble, timestep_fs, temperature_K, friction_per_fs, tau_fs, seed=seed + 1,
                                 device=device)
    state = _initial_momenta(state, init_velocities, temperature_K, seed, device)
    neighbors = VerletNeighbors(model.cutoff, skin)
    min_distance_of = MinDistance()
    com_removed = integrator.com_removed
    n_total = state.n_systems
    alive = list(range(n_total))
    final_atoms: list[Atoms | None] = [None] * n_total
    stopped: list[ReplicaStop] = []
    history = _ThermoHistory(n_total)
    out = Path(out_dir) if out_dir is not None else None
    files: dict[str, str] = {}

    with ExitStack() as stack:
        thermo_writer = xyz_files = traj_files = None
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            files["thermo"] = str(out / "thermo.csv")
            fh = stack.enter_context(open(files["thermo"], "w", newline=""))
            thermo_writer = csv.writer(fh)
            thermo_writer.writerow(THERMO_COLUMNS)
            xyz_files = [stack.enter_context(open(out / f"traj_{r:03d}.extxyz", "w")) for r in range(n_total)]
            traj_files = [stack.enter_context(ase.io.Trajectory(out / f"traj_{r:03d}.traj", "w"))
                          for r in range(n_total)]
            files["trajectories"] = str(out / "traj_*.extxyz, traj_*.traj")
        bar = stack.enter_context(tqdm(total=steps, disable=not progress, unit="step", desc="MD"))
        last_good: MDState | None = None
        failure: tuple[int, list] | None = None  # (global step, blow-ups) that stopped the current rollout
        done = -1  # last global step that was checked, logged and written
        offset = 0
        t0 = time.perf_counter()

        def on_step(step: int, s: MDState) -> bool | None:
            nonlocal last_good, done, failure
            g = offset + step
            temperature = s.temperature(com_removed)
            d_min = min_distance_of(s, neighbors.current)
            bad = blow_ups(s, temperature, d_min, min_distance, max_temperature_K)
            if bad:
                failure = (g, bad)
                return False
            last_good = s.clone()
            if g <= done:
                return None
            done = g
            if g % log_every == 0 or g == steps:
                e_pot, e_kin = s.energy.detach(), s.kinetic_energy().detach()
                values = torch.stack([e_pot, e_kin, e_pot + e_kin, temperature]).double().cpu().numpy()
                history.add(g * timestep_fs, alive, values)
                if thermo_writer is not None:
                    for b, r in enumerate(alive):
                        thermo_writer.writerow([g, f"{g * timestep_fs:.6g}", r, *(f"{x:.10g}" for x in values[:, b])])
                bar.set_postfix(T=f"{float(temperature.mean()):.0f} K", alive=len(alive), refresh=False)
            if xyz_files is not None and (g % traj_every == 0 or g == steps):
                for r, atoms in zip(alive, s.to_atoms(), strict=True):
                    atoms.info.update(step=g, time_fs=g * timestep_fs, replica=r)
                    ase.io.write(xyz_files[r], atoms, format="extxyz")
                    traj_files[r].write(atoms)
            if step > 0:
                bar.update(1)
            return None

        while alive:
            failure = None
            result = rollout(model, state, steps - offset, integrator, neighbors, store=False, on_step=on_step)
            if failure is None:
                state, offset = result.state, steps
                break
            g, bad = failure
            good_frames = last_good.to_atoms() if last_good is not None and g > offset else None
            for b, reason, detail in bad:
                r = alive[b]
                frame = good_frames[b] if good_frames is not None else result.state.to_atoms()[b]
                kept = f"step {g - 1}" if good_frames is not None else "the initial frame (not good)"
                message = f"replica {r} stopped at step {g} (t = {g * timestep_fs:g} fs): {detail}; kept {kept}"
                path = None
                if out is not None:
                    path = str(out / f"stopped_{r:03d}.extxyz")
                    ase.io.write(path, frame, format="extxyz")
                    message += f" -> {path}"
                logger.warning(message)
                if progress:
                    tqdm.write(message)
                stopped.append(ReplicaStop(r, g, g * timestep_fs, reason, message, frame, path))
                final_atoms[r] = frame
            keep = [b for b in range(len(alive)) if b not in {x[0] for x in bad}]
            alive = [alive[b] for b in keep]
            state = result.state.select(keep).detach()
            done = g - 1  # survivors' step g is logged when the next rollout starts
            neighbors.reset()
            offset = g
            last_good = None
        wall = time.perf_counter() - t0

    for r, atoms in zip(alive, state.to_atoms(), strict=True):
        final_atoms[r] = atoms
    result = SimulationResult(
        state=state, replicas=alive, final_atoms=final_atoms, stopped=stopped, steps=offset,
        timestep_fs=timestep_fs, wall_s=wall, neighbor_builds=neighbors.builds, files=files,
    )
    if out is not None:
        files["plot"] = str(out / "thermo.png")
        history.plot(out / "thermo.png")
        files["summary"] = str(out / "summary.json")
        summary = {
            "steps": offset, "steps_asked": steps, "timestep_fs": timestep_fs, "ensemble": ensemble,
            "temperature_K": temperature_K, "replicas": n_total, "wall_s": wall, "steps_per_s": result.steps_per_s,
            "ns_per_day": result.ns_per_day, "neighbor_builds": neighbors.builds,
            "stopped": [{"replica": s.replica, "step": s.step, "reason": s.reason, "message": s.message}
                        for s in stopped],
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return result


def _initial_momenta(state: MDState, mode: str, temperature_K: float | None, seed: int, device: str) -> MDState:
    """Draw Maxwell-Boltzmann momenta where ``mode`` asks for them (see :func:`simulate`)."""
    if mode == "given":
        return state
    if temperature_K is None:
        if mode == "maxwell-boltzmann":
            raise ValueError("init_velocities='maxwell-boltzmann' needs temperature_K")
        return state
    at_rest = ~_per_system_any(state.momenta.abs().sum(-1) > 0, state.system, state.n_systems)
    draw = torch.ones_like(at_rest) if mode == "maxwell-boltzmann" else at_rest
    if not bool(draw.any()):
        return state
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed))
    p = maxwell_boltzmann_momenta(state.masses, state.system, temperature_K, generator, n_systems=state.n_systems)
    return state.replace(momenta=torch.where(draw[state.system][:, None], p, state.momenta))
