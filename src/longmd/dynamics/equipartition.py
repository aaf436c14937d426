"""Temperature of every species: equipartition, the failure mode to watch with learned strides (FlashMD).

T_Z = 2 K_Z / (3 N_Z k_B) from the momenta of the free (not FixAtoms-held) atoms of species Z in each system,
in the lab frame: a thermostatted system has the same T_Z for every Z; a learned stride that heats light atoms
and cools heavy ones (or a global thermostat that cannot fix it) shows as a spread between species.
"""

from __future__ import annotations

import torch
from torch import Tensor

from longmd.dynamics.state import MDState
from longmd.units import KB_EV_PER_K


def species_temperatures(state: MDState, species: list[int]) -> Tensor:
    """(B, len(species)) kinetic temperature of each species in each system, K (NaN where a system has none)."""
    n, k = state.n_systems, len(species)
    table = torch.full((int(max(species)) + 1,), -1, dtype=torch.long, device=state.device)
    table[torch.as_tensor(species, device=state.device)] = torch.arange(k, device=state.device)
    column = table[state.numbers]
    if bool((column < 0).any()):
        raise ValueError(f"species_temperatures: the state has species outside {species}")
    cell = state.system * k + column
    kinetic = 0.5 * (state.momenta * state.momenta).sum(-1) / state.masses
    sums = torch.zeros(n * k, dtype=state.dtype, device=state.device).index_add(0, cell, kinetic)
    free = torch.ones_like(kinetic) if state.fixed is None else (~state.fixed).to(state.dtype)
    counts = torch.zeros(n * k, dtype=state.dtype, device=state.device).index_add(0, cell, free)
    return (2.0 * sums / (3.0 * counts * KB_EV_PER_K)).reshape(n, k)
