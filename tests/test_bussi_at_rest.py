"""Regression: Bussi rescaling of a system with zero kinetic energy (a lone atom, or atoms at rest)."""

from __future__ import annotations

import pytest
import torch
from ase import Atoms

from longmd.dynamics.state import MDState
from longmd.dynamics.steps import BussiR


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_svr_leaves_a_system_at_rest_finite_and_at_rest(dtype):
    lone = Atoms("Ar", positions=[[0.0, 0.0, 0.0]], cell=[10.0] * 3, pbc=True)
    pair = Atoms("Ar2", positions=[[0.0, 0.0, 0.0], [3.8, 0.0, 0.0]], cell=[10.0] * 3, pbc=True)
    pair.set_momenta([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])
    state = MDState.from_atoms([lone, pair], dtype=dtype)
    out = BussiR(300.0, tau=1.0, dt=0.1, generator=torch.Generator().manual_seed(0))(state)
    assert torch.isfinite(out.momenta).all()
    assert torch.equal(out.momenta[0], torch.zeros(3, dtype=dtype))  # at rest stays at rest (no NaN)
    assert not torch.equal(out.momenta[1:], state.momenta[1:])  # the moving system is still rescaled
