"""A training point's rollout and its loss: the window's first frame, the NVE propagator, the named loss terms.

Dynamic Training and running MD are one computation: the propagator is the one :func:`build_integrator`
makes everywhere, with the reference trajectory's neighbour lists (a neighbour search is not differentiable)
and the run's gradient mode. A potential runs velocity Verlet on its forces; a stride predictor its own stride.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from longmd.data.batching import WindowBatch
from longmd.dynamics.cores import evaluator_for
from longmd.dynamics.neighbor_policy import GivenNeighbors
from longmd.dynamics.propagator import Propagator, build_integrator
from longmd.dynamics.rollout import rollout
from longmd.dynamics.state import MDState
from longmd.training.losses import LossParts, LossSettings, rollout_loss


def training_propagator(model: nn.Module, edges: list, timestep_fs: float, gradient: str,
                        update_every: int = 1) -> Propagator:
    """NVE over the windows' reference neighbour lists (each reused for ``update_every`` steps)."""
    return build_integrator(evaluator_for(model, GivenNeighbors(edges, update_every=update_every), gradient),
                            timestep_fs)


def window_loss(model: nn.Module, batch: WindowBatch, timestep_fs: float, gradient: str, settings: LossSettings,
                update_every: int = 1) -> tuple[Tensor, LossParts]:
    """Loss of a batch of windows of equal length (the DT rollout for length > 1) from their first frames."""
    momenta = batch.velocities * batch.masses[:, None]
    state = MDState(positions=batch.positions[0], momenta=momenta[0], masses=batch.masses, numbers=batch.numbers,
                    cell=batch.cell, pbc=batch.pbc, system=batch.system)
    propagator = training_propagator(model, batch.edges, timestep_fs, gradient, update_every)
    result = rollout(propagator, state, batch.n_steps - 1)
    n_atoms = torch.bincount(batch.system, minlength=batch.n_systems)
    reference = {"forces": batch.forces, "energy": batch.energy, "positions": batch.positions, "momenta": momenta}
    recorded = {"forces": result.forces, "energy": result.energy, "positions": result.positions,
                "momenta": result.momenta}
    scales = model.target_scales(batch.numbers) if hasattr(model, "target_scales") else None
    return rollout_loss(recorded, reference, batch.numbers, settings, n_atoms, scales)
