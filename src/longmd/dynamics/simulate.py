"""Long MD runs of batched replicas on the shared :func:`~longmd.dynamics.rollout.rollout`.

Around the rollout: Maxwell-Boltzmann start, Verlet lists with a skin, a thermo log (CSV), trajectories
(extxyz and ASE .traj), a plot of energies and temperature, a progress bar and per-replica blow-up checks.

After every step one vectorised pass on the device (one host transfer; docs/dynamics.md lists the few other
reads of a step) checks every replica: a non-finite
state, atoms closer than ``min_distance`` or a temperature above ``max_temperature_K`` stops that replica
with a message; its last good frame (the previous step, held by reference) is kept and written. It leaves
the batch and the others go on: systems are independent, so survivors follow exactly the trajectory they
would have followed alone (NVE; thermostat draws differ). See ``docs/dynamics.md``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.data import chemical_symbols
from torch import nn

from longmd.dynamics.cores import ForceField, evaluator_for
from longmd.dynamics.failures import (
    Limits,
    MinDistance,
    default_max_temperature,
    per_system_any,
)
from longmd.dynamics.filters import ALPHA
from longmd.dynamics.neighbor_policy import VerletNeighbors
from longmd.dynamics.propagator import build_integrator
from longmd.dynamics.rollout import rollout_dropping_failures
from longmd.dynamics.sim_checkpoint import (
    CHECKPOINT,
    SimulationCheckpoint,
    frame_from_record,
    model_fingerprint,
)
from longmd.dynamics.sim_monitor import Monitor, ReplicaStop, stop_record
from longmd.dynamics.sim_outputs import Outputs, ThermoHistory
from longmd.dynamics.state import MDState, maxwell_boltzmann_momenta
from longmd.models.committee import SPREAD, Committee
from longmd.models.inference import inference_model
from longmd.progress import step_progress


@dataclass
class SimulationResult:
    """Outcome of :func:`simulate`.

    Attributes:
        state: final state of the surviving replicas; ``replicas`` their ids (system b of ``state`` is replica
            ``replicas[b]``). final_atoms: the last frame of every replica (last good one for stopped replicas).
        stopped: replicas that blew up. status: per replica, ``"ok"`` or the reason it stopped (:data:`REASONS`).
        steps_completed: per replica, the steps run with every check passed. steps: last step reached (earlier
            than ``steps_asked`` when every replica stopped). wall_s: time of the MD loop.
        neighbor_builds: Verlet-list builds. files: file name -> path of everything written.
    """

    state: MDState
    replicas: list[int]
    final_atoms: list[Atoms]
    stopped: list[ReplicaStop]
    status: list[str]
    steps_completed: list[int]
    steps: int
    steps_asked: int
    timestep_fs: float
    wall_s: float
    neighbor_builds: int
    files: dict[str, str] = field(default_factory=dict)

    @property
    def steps_per_s(self) -> float:
        """MD steps of the whole batch per second."""
        return self.steps / max(self.wall_s, 1e-12)

    @property
    def ns_per_day(self) -> float:
        """Simulated time per day of wall time, per replica."""
        return self.steps_per_s * self.timestep_fs * 1e-6 * 86400.0

    def summary(self) -> str:
        """A few lines for people: speed, how many replicas ran to the end, why the others stopped."""
        n = len(self.status)
        lines = [
            f"{self.steps} of {self.steps_asked} steps x {n} replica(s) in {self.wall_s:.1f} s: "
            f"{self.steps_per_s:.1f} steps/s, {self.ns_per_day:.3f} ns/day per replica "
            f"({n * self.ns_per_day:.3f} in all), {self.neighbor_builds} neighbour-list builds",
            f"{self.status.count('ok')} of {n} replica(s) ran to the end",
        ]
        return "\n".join(lines + [f"  {s.message}" for s in self.stopped])

    def to_dict(self) -> dict:
        """JSON-able summary (what ``summary.json`` holds)."""
        return {
            "steps": self.steps, "steps_asked": self.steps_asked, "timestep_fs": self.timestep_fs,
            "replicas": len(self.status), "status": self.status, "steps_completed": self.steps_completed,
            "wall_s": self.wall_s, "steps_per_s": self.steps_per_s, "ns_per_day": self.ns_per_day,
            "neighbor_builds": self.neighbor_builds, "files": self.files,
            "stopped": [{"replica": s.replica, "step": s.step, "reason": s.reason, "message": s.message}
                        for s in self.stopped],
        }  # fmt: skip


def seed_streams(seed: int) -> tuple[int, int]:
    """Independent seeds (initial velocities, thermostat noise) spawned from ``numpy.random.SeedSequence(seed)``."""
    velocities, noise = (int(s.generate_state(1, np.uint64)[0]) for s in np.random.SeedSequence(seed).spawn(2))
    return velocities, noise


def _initial_state(
    init: Atoms | Sequence[Atoms] | MDState, replicas: int, device: str, dtype: torch.dtype
) -> MDState:
    """Batched state of every replica, without cached forces (they are always evaluated at the start).

    The structures' FixAtoms / FixCom constraints come along (:meth:`MDState.from_atoms`; others raise)."""
    if isinstance(init, MDState):
        state = init.detach().to(device=device, dtype=dtype)
    else:
        state = MDState.from_atoms([init] if isinstance(init, Atoms) else list(init), device=device, dtype=dtype)
    if replicas > 1:
        state = state.select(torch.arange(state.n_systems, device=state.device).repeat_interleave(replicas))
    return state.replace(forces=None, energy=None)


def _initial_momenta(state: MDState, mode: str, temperature_K: float | None, seed: int) -> MDState:
    """Draw Maxwell-Boltzmann momenta where ``mode`` asks for them (see :func:`simulate`)."""
    if mode == "given":
        return state
    if temperature_K is None:
        if mode == "maxwell-boltzmann":
            raise ValueError("init_velocities='maxwell-boltzmann' needs temperature_K")
        return state
    at_rest = ~per_system_any(state.momenta.abs().sum(-1) > 0, state.system, state.n_systems)
    draw = torch.ones_like(at_rest) if mode == "maxwell-boltzmann" else at_rest
    if not bool(draw.any()):
        return state
    generator = torch.Generator(device=state.device)
    generator.manual_seed(seed)
    p = maxwell_boltzmann_momenta(state.masses, state.system, temperature_K, generator, n_systems=state.n_systems)
    return state.replace(momenta=torch.where(draw[state.system][:, None], p, state.momenta))


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
    max_temperature_K: float | None = None,
    progress: bool = True,
    checkpoint_every: int = 1000,
    resume: bool = False,
    filters: Sequence[str] = (),
    energy_model: nn.Module | None = None,
    max_spread_A: float | None = None,
) -> SimulationResult:
    """Run ``steps`` MD steps of ``model`` for every structure (x ``replicas``), batched.

    ``model`` is a potential (velocity Verlet) or a stride predictor (:class:`~longmd.models.stride.StridePredictor`,
    one call per step of its stride: ``timestep_fs`` must equal it).

    Args:
        init: structure(s) (momenta and FixAtoms / FixCom constraints from the Atoms; other constraints raise)
            or an :class:`MDState` (cached forces are ignored: forces are evaluated at the initial positions).
            Replica ``k * replicas + r`` is copy r of structure k.
        timestep_fs: fs. ensemble: ``"nve"``, ``"langevin"`` (OBABO, ``friction_per_fs`` in 1/fs) or ``"svr"``
            (Bussi, relaxation time ``tau_fs`` in fs). temperature_K: thermostat target, K; also the temperature
            of drawn initial velocities.
        init_velocities: ``"auto"`` draws Maxwell-Boltzmann momenta (zero total momentum) for systems that have
            none when ``temperature_K`` is given; ``"maxwell-boltzmann"`` always draws; ``"given"`` never.
        out_dir: where ``thermo.csv`` (every ``log_every`` steps: energies, T, the temperature of every species
            ``T_<symbol>_K`` (2 K_Z / 3 N_Z k_B, lab frame), the energy filter's α and a committee's spread when
            they act), ``traj_XXX.extxyz`` / ``.traj`` (every
            ``traj_every`` steps), ``stopped_XXX.extxyz`` (last good frame of a stopped replica),
            ``thermo.png`` and ``summary.json`` go; None writes nothing.
        seed: initial velocities and thermostat noise use independent streams spawned from it.
        device, dtype: where and in which precision to run (dtype default: the model's). The caller's model is
            not modified; a cast copy is used when it must change.
        filters: inference filters after the core step, ``"com"`` and/or ``"energy"``
            (:mod:`longmd.dynamics.filters`). energy_model: the companion potential whose energy (only) the
            ``"energy"`` filter conserves for a stride predictor. max_spread_A: stop a replica whose committee
            spread (:class:`~longmd.models.committee.Committee`) passes it, Å (None: only logged).
        skin: Verlet-list skin, Å. min_distance (Å), max_temperature_K (K; default 10x ``temperature_K``, or
            5000 K without one): blow-up thresholds.
        checkpoint_every: with ``out_dir``, write ``checkpoint.pt`` (atomically) every that many steps; one is
            always written at the end (0: only that one). resume: continue the run in ``out_dir`` from its
            checkpoint (``init`` is only compared by its atomic numbers and replica count; ``steps`` may be
            raised to extend a finished run). A run without ``resume`` deletes an old checkpoint in ``out_dir``.
    """
    if steps < 0 or replicas < 1 or log_every < 1 or traj_every < 1 or checkpoint_every < 0:
        raise ValueError(f"need steps >= 0, replicas, log_every, traj_every >= 1 and checkpoint_every >= 0; got "
                         f"{steps}, {replicas}, {log_every}, {traj_every}, {checkpoint_every}")
    if init_velocities not in ("auto", "maxwell-boltzmann", "given"):
        raise ValueError(f"init_velocities must be auto | maxwell-boltzmann | given, got {init_velocities!r}")
    if resume and out_dir is None:
        raise ValueError("resume needs the out_dir of the run to continue")
    model, dtype = inference_model(model, device, dtype)
    velocity_seed, noise_seed = seed_streams(seed)
    # The replica check reads this Verlet list; a predictor without a neighbour list gets one of min_distance.
    neighbors = VerletNeighbors(model.cutoff or min_distance, skin, isolate_nonfinite=True)
    evaluator = evaluator_for(model, neighbors)
    companion = None
    if energy_model is not None:
        energy_model, _ = inference_model(energy_model, device, dtype)
        companion = ForceField(energy_model, VerletNeighbors(energy_model.cutoff or 0.0, skin, isolate_nonfinite=True),
                               forces=False)
    integrator = build_integrator(evaluator, timestep_fs, ensemble, temperature_K, friction_per_fs, tau_fs,
                                  seed=noise_seed, device=device, filters=filters, energy_model=companion)
    generator = next(iter(integrator.generators), None)
    state = _initial_state(init, replicas, device, dtype)
    state = _initial_momenta(state, init_velocities, temperature_K, velocity_seed)
    if max_temperature_K is None:
        max_temperature_K = default_max_temperature(temperature_K)
    limits = Limits(min_distance, max_temperature_K, max_spread_A=max_spread_A)
    n_total = state.n_systems
    alive, offset, stopped, wall_before, builds_before = list(range(n_total)), 0, [], 0.0, 0
    history = ThermoHistory(n_total)
    run = {"model": model_fingerprint(model), "numbers": state.numbers.tolist(), "replicas": n_total,
           "timestep_fs": timestep_fs, "ensemble": ensemble, "temperature_K": temperature_K,
           "friction_per_fs": friction_per_fs if ensemble == "langevin" else None,
           "tau_fs": tau_fs if ensemble == "svr" else None, "seed": seed, "dtype": str(dtype),
           "noise_device": None if generator is None else generator.device.type,  # CPU and CUDA streams differ
           "filters": [f if isinstance(f, str) else type(f).__name__ for f in filters],
           "energy_model": None if energy_model is None else model_fingerprint(energy_model)}
    saved = None
    if resume:
        saved = SimulationCheckpoint.load(Path(out_dir), run, device)
        if steps < saved.step:
            raise ValueError(f"resume: the checkpoint is at step {saved.step}, beyond steps={steps}")
        state, alive, offset, wall_before, builds_before = (saved.state, saved.alive, saved.step, saved.wall_s,
                                                           saved.neighbor_builds)
        stopped = [ReplicaStop(**{**s, "frame": frame_from_record(s["frame"])}) for s in saved.stopped]
        history.load_state_dict(saved.history)
        for policy, kept in zip(_verlet_lists(neighbors, companion), saved.neighbor_reference or [], strict=False):
            policy.load_state_dict(kept, state)
        if generator is not None:
            generator.set_state(saved.generator_state)

    if out_dir is not None and saved is None:  # a new run: an old checkpoint there must not be resumed later
        (Path(out_dir) / CHECKPOINT).unlink(missing_ok=True)
    species = sorted({int(z) for z in state.numbers.tolist()})
    extras = tuple(name for name, on in ((ALPHA, "energy" in filters), (SPREAD, isinstance(model, Committee))) if on)
    columns = (*(f"T_{chemical_symbols[z]}_K" for z in species), *extras)
    with Outputs(out_dir, n_total, resume_from=saved and saved.outputs, columns=columns) as outputs, step_progress(
            steps, offset, progress, "MD") as bar:
        if saved is not None:  # the stopped frames the checkpoint knows are files of this run; later ones go
            kept = {Path(stop.frame_path).name for stop in stopped}
            for path in Path(out_dir).glob("stopped_*.extxyz"):
                if path.name in kept:
                    outputs.path(path.name)
                else:
                    path.unlink()
        t0 = time.perf_counter()

        def checkpoint(step: int, s: MDState, alive: list[int]) -> None:
            SimulationCheckpoint(
                step=step, state=s, alive=list(alive), generator_state=None if generator is None else
                generator.get_state(), stopped=[stop_record(x) for x in stopped], history=history.state_dict(),
                outputs=outputs.marks(), run=run, wall_s=wall_before + time.perf_counter() - t0,
                neighbor_builds=builds_before + neighbors.builds,
                neighbor_reference=[policy.state_dict() for policy in _verlet_lists(neighbors, companion)],
            ).save(outputs.dir)

        monitor = Monitor(MinDistance(neighbors, reach=min_distance + skin), limits, outputs, history, bar, steps,
                           timestep_fs, log_every, traj_every, integrator.com_removed, progress, stopped,
                           written_at=offset if saved is not None else None,
                           checkpoint=checkpoint if outputs.dir is not None else None,
                           checkpoint_every=checkpoint_every, species=species, extras=extras)
        state, alive, offset = rollout_dropping_failures(integrator, state, steps, monitor,
                                                         ids=alive, first_step=offset)
        if outputs.dir is not None:
            checkpoint(offset, state, alive)
        wall = wall_before + time.perf_counter() - t0

    thermostat = "" if ensemble == "nve" else f" at {temperature_K:g} K"
    title = f"{ensemble.upper()}{thermostat}, {timestep_fs:g} fs steps, {type(model).__name__}"
    return _finish(state, alive, stopped, n_total, offset, steps, timestep_fs, wall,
                   builds_before + neighbors.builds, outputs, history, title)


def _verlet_lists(neighbors: VerletNeighbors, companion: ForceField | None) -> list[VerletNeighbors]:
    """The run's Verlet lists: the model's, and the companion energy model's when there is one."""
    return [neighbors] + ([companion.neighbors] if companion is not None else [])


def _finish(state: MDState, alive: list[int], stopped: list[ReplicaStop], n_total: int, offset: int, steps: int,
            timestep_fs: float, wall: float, builds: int, outputs: Outputs,
            history: ThermoHistory, title: str = "MD") -> SimulationResult:
    """The result of a run; plot and ``summary.json`` written when there is an output directory."""
    final_atoms: list[Atoms | None] = [None] * n_total
    status, completed = ["ok"] * n_total, [offset] * n_total
    for r, atoms in zip(alive, state.to_atoms(), strict=True):
        final_atoms[r] = atoms
    for s in stopped:
        final_atoms[s.replica], status[s.replica], completed[s.replica] = s.frame, s.reason, max(s.step - 1, 0)
    result = SimulationResult(
        state=state, replicas=alive, final_atoms=final_atoms, stopped=stopped, status=status,
        steps_completed=completed, steps=offset, steps_asked=steps, timestep_fs=timestep_fs, wall_s=wall,
        neighbor_builds=builds, files=outputs.files,
    )
    if outputs.dir is not None:
        history.plot(outputs.path("thermo.png"), title)
        summary = outputs.path("summary.json")
        summary.write_text(json.dumps(result.to_dict(), indent=2))
    return result
