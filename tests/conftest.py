"""Shared pytest fixtures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

# Tests use tiny models, for which thread start-up costs more than it saves (up to 50x on a busy 2-core box).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same random state and torch's default dtype (float32): MACE's ASE calculator
    sets the process-wide default to its model's dtype, which would change what later tests initialise."""
    torch.manual_seed(0)
    np.random.seed(0)
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    yield
    torch.set_default_dtype(dtype)


def make_emt_trajectories(path, n_traj: int = 4, n_frames: int = 40, timestep_fs: float = 2.0, seed: int = 0):
    """Small reference data with a known potential: Cu28Au4 fcc cells, ASE EMT, NVE after a 600 K kick.

    Written to ``path`` as one extxyz file whose frames carry ``traj_id`` and ``timestep_fs``.
    """
    import ase.io
    from ase import units
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.md import velocitydistribution
    from ase.md.verlet import VelocityVerlet

    rng = np.random.default_rng(seed)
    frames = []
    for t in range(n_traj):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
        atoms.symbols[rng.choice(len(atoms), 4, replace=False)] = "Au"
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        atoms.calc = EMT()
        # thermalize_momenta is the newer name (ASE >= 3.28) of MaxwellBoltzmannDistribution.
        thermalize = getattr(velocitydistribution, "thermalize_momenta", None)
        thermalize = thermalize or velocitydistribution.MaxwellBoltzmannDistribution
        thermalize(atoms, temperature_K=600, rng=rng)
        velocitydistribution.Stationary(atoms)
        dyn = VelocityVerlet(atoms, timestep=timestep_fs * units.fs)
        for step in range(n_frames):
            if step:
                dyn.run(1)
            frame = atoms.copy()
            frame.calc = SinglePointCalculator(frame, energy=atoms.get_potential_energy(), forces=atoms.get_forces())
            frame.info.update(traj_id=t, step=step, timestep_fs=timestep_fs)
            frames.append(frame)
    ase.io.write(path, frames, format="extxyz")
    return path


@pytest.fixture(scope="session")
def emt_data(tmp_path_factory):
    """Path of a small EMT reference dataset (4 trajectories x 40 frames, 32 atoms, 2 fs)."""
    return make_emt_trajectories(tmp_path_factory.mktemp("emt") / "emt.extxyz")


def tiny_training_config(data, out, *extra: str):
    """A training config small enough for tests: tiny EGNN (no 3-body term), float64, EMT data split in time
    blocks."""
    from longmd.config import load_config

    return load_config(
        None,
        [
            f"data.paths=[{data}]",
            "data.split=time_blocks",
            "data.val_fraction=0.25",
            "data.test_fraction=0.25",
            "model.options={hidden: 8, n_rff: 8, n_layers: 1}",
            "model.three_body=null",
            "training.windows_per_epoch=8",
            "training.val_length=6",
            "training.progress=false",
            "training.dtype=float64",
            f"out={out}",
            *extra,
        ],
    )


def thermalised(atoms_list, temperature_K: float, seed: int = 0):
    """A batched MD state of ``atoms_list`` with exact Maxwell-Boltzmann momenta at ``temperature_K``."""
    from longmd.dynamics.state import MDState, maxwell_boltzmann_momenta

    state = MDState.from_atoms(atoms_list)
    gen = torch.Generator().manual_seed(seed)
    p = maxwell_boltzmann_momenta(state.masses, state.system, temperature_K, gen, exact=True,
                                  n_systems=state.n_systems)
    return state.replace(momenta=p)


def integrator(ensemble: str, timestep_fs: float, temperature_K: float | None = None, **kwargs):
    """A maker of the builder's integrator for ``ensemble`` around any evaluator (see :func:`md`)."""
    from longmd.dynamics.propagator import build_integrator

    return lambda evaluator: build_integrator(evaluator, timestep_fs, ensemble, temperature_K, **kwargs)


def md(model, state, n_steps: int, make, neighbors, gradient: str = "none", **kwargs):
    """``rollout`` of ``model``'s velocity-Verlet dynamics: ``make`` from :func:`integrator`, neighbour lists
    ``neighbors``, gradient mode ``gradient``; other keywords go to ``rollout``."""
    from longmd.dynamics.cores import ForceField
    from longmd.dynamics.rollout import rollout

    return rollout(make(ForceField(model, neighbors, gradient)), state, n_steps, **kwargs)


def train_killed_in_epoch(cfg, epoch: int, monkeypatch) -> None:
    """Run a Trainer on ``cfg`` that dies (KeyboardInterrupt) when epoch ``epoch`` starts: a killed run whose
    last checkpoint is that of epoch ``epoch - 1``."""
    from longmd.training.trainer import Trainer

    original = Trainer.train_epoch

    def dies(self, s):
        if self.epoch == epoch:
            raise KeyboardInterrupt
        return original(self, s)

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "train_epoch", dies)
        with pytest.raises(KeyboardInterrupt):
            Trainer(cfg, log=lambda *_: None).run()
