"""An ASE-style dynamics object around longmd's propagators: learned strides (or any potential) on ``Atoms``.

    dyn = LearnedDynamics(atoms, "stride.pt", energy_model="potential.pt", ensemble="langevin",
                          temperature_K=500)
    dyn.attach(lambda: print(dyn.get_time(), atoms.get_temperature()), interval=10)
    dyn.run(1000)                    # 1000 strides; atoms' positions and momenta follow

Like ASE's ``MolecularDynamics``: ``run(steps)``, ``attach(function, interval)``, ``nsteps``, ``get_time()``
(fs here). The atoms are updated in place after every step (positions, momenta; the companion's energy as a
single-point result when there is one). The integrator is :func:`~longmd.dynamics.propagator.build_integrator`'s,
with the centre-of-mass filter for predictors and the energy filter when ``energy_model`` is given.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from torch import nn

from longmd.dynamics.cores import ForceField, evaluator_for
from longmd.dynamics.neighbor_policy import VerletNeighbors
from longmd.dynamics.propagator import build_integrator
from longmd.dynamics.state import MDState
from longmd.models.inference import inference_model
from longmd.models.io import open_model
from longmd.models.stride import StridePredictor


class LearnedDynamics:
    """Run ``model`` (a stride predictor, or a potential with velocity Verlet) on ``atoms`` in place.

    Args:
        atoms: the structure, with momenta (zero when absent). model: a model or its file / spec.
        energy_model: companion potential for the energy filter (predictors only).
        ensemble, temperature_K, friction_per_fs, tau_fs, seed: as ``longmd simulate``.
        timestep_fs: default the predictor's stride (required for a potential).
        device, dtype: where and how the model runs. skin: Verlet-list skin, Å.
    """

    def __init__(self, atoms: Atoms, model: nn.Module | str | Path, energy_model: nn.Module | str | Path | None = None,
                 ensemble: str = "nve", temperature_K: float | None = None, friction_per_fs: float = 0.01,
                 tau_fs: float = 100.0, seed: int = 0, timestep_fs: float | None = None, device: str = "cpu",
                 dtype: torch.dtype = torch.float64, skin: float = 1.0) -> None:
        self.atoms = atoms  # FixAtoms / FixCom are applied (MDState.from_atoms; other constraints raise)
        model = _open(model, device, dtype)
        predictor = isinstance(model, StridePredictor)
        if timestep_fs is None:
            if not predictor:
                raise ValueError("LearnedDynamics: a potential needs timestep_fs")
            timestep_fs = float(model.timestep_fs)
        companion = None
        if energy_model is not None:
            if not predictor:
                raise ValueError("LearnedDynamics: energy_model filters a stride predictor; a potential has its own")
            e_model = _open(energy_model, device, dtype)
            companion = ForceField(e_model, VerletNeighbors(e_model.cutoff or 0.0, skin), forces=False)
        filters = (["com"] if predictor else []) + (["energy"] if companion is not None else [])
        neighbors = VerletNeighbors(model.cutoff or 0.0, skin)
        self.propagator = build_integrator(evaluator_for(model, neighbors), timestep_fs, ensemble, temperature_K,
                                           friction_per_fs, tau_fs, seed=seed, device=device, filters=filters,
                                           energy_model=companion)
        self.timestep_fs = float(timestep_fs)
        self.nsteps = 0
        self.observers: list[tuple[Callable[[], None], int]] = []
        self.state = self.propagator.init(MDState.from_atoms(atoms, device=device, dtype=dtype))
        self._write_back()

    def attach(self, function: Callable[[], None], interval: int = 1) -> None:
        """Call ``function()`` every ``interval`` steps (and at step 0 of the first run, as ASE does)."""
        self.observers.append((function, int(interval)))

    def get_time(self) -> float:
        """Simulated time, fs."""
        return self.nsteps * self.timestep_fs

    def run(self, steps: int) -> bool:
        """Advance ``steps`` steps; a non-finite state (e.g. α² < 0 in the energy filter) raises."""
        if self.nsteps == 0:
            self._call_observers()
        for _ in range(int(steps)):
            with torch.no_grad():
                self.state = self.propagator(self.state)
            self.nsteps += 1
            if not bool(torch.isfinite(self.state.positions).all() and torch.isfinite(self.state.momenta).all()):
                raise FloatingPointError(f"LearnedDynamics: non-finite state at step {self.nsteps} (energy filter "
                                         "α² < 0 or a blow-up); the atoms keep the last good step")
            self._write_back()
            self._call_observers()
        return True

    def _call_observers(self) -> None:
        for function, interval in self.observers:
            if self.nsteps % interval == 0:
                function()

    def _write_back(self) -> None:
        s = self.state.detach().to("cpu")
        self.atoms.set_positions(s.positions.double().numpy())
        self.atoms.set_momenta(s.momenta.double().numpy(), apply_constraint=False)
        if s.energy is not None:
            forces = None if s.forces is None else s.forces.double().numpy()
            self.atoms.calc = SinglePointCalculator(self.atoms, energy=float(s.energy[0]), forces=forces)
        else:
            self.atoms.calc = None


def _open(model: nn.Module | str | Path, device: str, dtype: torch.dtype) -> nn.Module:
    """A model object or file on ``device`` in ``dtype`` (the caller's model is never modified)."""
    if not isinstance(model, nn.Module):
        model = open_model(str(model), device=device)
    return inference_model(model, device, dtype)[0]

