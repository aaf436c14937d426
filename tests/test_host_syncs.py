"""Host syncs per MD step, counted on the CPU: every read of device data in the loop stalls a GPU.

The reads are counted by wrapping the torch calls that make them (``.item()``, ``bool()``, ``float()``, ``int()``,
``.tolist()``, ``.cpu()``, ``.to("cpu")``, ``torch.equal``, ``torch.nonzero``, boolean-mask indexing) and
compared with an upper bound per step, so a new sync in the per-step path fails here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk

from conftest import integrator, md
from longmd.dynamics.neighbor_policy import VerletNeighbors
from longmd.dynamics.simulate import simulate
from longmd.dynamics.state import MDState
from longmd.models.egnn import egnn_potential
from longmd.models.potential import Potential
from longmd.training.losses import LossSettings, sequence_loss


class SyncCounter:
    """Counts host syncs while ``active``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count, self.active, self._inside = 0, False, False
        for name in ("item", "__bool__", "__float__", "__int__", "__index__", "tolist", "cpu", "nonzero"):
            self._wrap(monkeypatch, torch.Tensor, name)
        self._wrap(monkeypatch, torch.Tensor, "to", lambda *a, **k: "cpu" in a[1:] or k.get("device") == "cpu")
        self._wrap(monkeypatch, torch.Tensor, "__getitem__", lambda t, i: isinstance(i, torch.Tensor)
                   and i.dtype == torch.bool)
        for name in ("equal", "nonzero", "masked_select", "unique"):
            self._wrap(monkeypatch, torch, name)

    def _wrap(self, monkeypatch: pytest.MonkeyPatch, owner, name: str, when=None) -> None:
        original = getattr(owner, name)

        def counted(*args, **kwargs):
            if self.active and not self._inside and (when is None or when(*args, **kwargs)):
                self.count += 1
            inside, self._inside = self._inside, True
            try:
                return original(*args, **kwargs)
            finally:
                self._inside = inside

        monkeypatch.setattr(owner, name, counted)

    def __call__(self, run) -> int:
        """Syncs made by ``run()``."""
        self.count, self.active = 0, True
        try:
            run()
        finally:
            self.active = False
        return self.count


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> SyncCounter:
    return SyncCounter(monkeypatch)


def small_egnn() -> Potential:
    torch.manual_seed(0)
    return egnn_potential([1, 6, 8], hidden=8, n_rff=6, n_layers=2, cutoff=3.0).double()


def crystal():
    atoms = bulk("C", "diamond", a=3.57, cubic=True)
    atoms.numbers[:2] = [1, 8]
    return atoms


def test_counter_sees_syncs(syncs: SyncCounter) -> None:
    x = torch.arange(4.0)
    assert syncs(lambda: (bool(x.all()), float(x[0]), x.tolist(), torch.nonzero(x), x[x > 1], x.to("cpu"))) == 6
    assert syncs(lambda: (x * 2, x.to(torch.float32), torch.where(x > 1, x, 0.0))) == 0


def test_nve_rollout_step_reads_the_device_at_most_twice(syncs: SyncCounter) -> None:
    """A step without a list build: the Verlet list's one read (largest displacement, cell changed) and the
    model's one (how many edges are within its cutoff). A rollout adds one of its own (the species check of a
    new ``numbers`` tensor), hence the difference of two rollouts."""
    model = small_egnn()
    state = MDState.from_atoms([crystal(), crystal()], dtype=torch.float64)
    neighbors = VerletNeighbors(model.cutoff, skin=1.0, isolate_nonfinite=True)
    make = integrator("nve", 0.5)
    state = md(model, state, 1, make, neighbors, store=False).state

    def run(steps: int) -> None:
        assert md(model, state, steps, make, neighbors, store=False).steps_done == steps

    per_step = (syncs(lambda: run(21)) - syncs(lambda: run(1))) / 20
    assert neighbors.builds == 1  # no build after the first: steady steps only
    assert per_step <= 2, f"{per_step:.2f} host syncs per NVE step (expected <= 2)"


def test_simulate_step_sync_budget(syncs: SyncCounter) -> None:
    """``simulate``: the rollout's reads, the blow-up check's one transfer and the non-finite guard of the
    Verlet list (to be folded into the list's read); list builds add a few each (per-system rebuilds search fewer
    systems in more, smaller builds: 5 searches in 4 builds here against 6 in 3 for whole-batch rebuilds)."""
    model, atoms = small_egnn(), crystal()

    def run(steps: int) -> None:
        simulate(model, atoms, steps, timestep_fs=0.5, temperature_K=300.0, replicas=2, progress=False, skin=0.3)

    setup, total = syncs(lambda: run(0)), syncs(lambda: run(50))
    assert (total - setup) / 50 <= 3.75


def test_sequence_loss_reads_species_once_and_parts_lazily(syncs: SyncCounter) -> None:
    rng = np.random.default_rng(0)
    numbers = torch.tensor([1, 1, 6, 6, 6, 8])
    forces = [torch.tensor(rng.normal(size=(6, 3))) for _ in range(5)]
    ref = torch.tensor(rng.normal(size=(5, 6, 3)))
    out = []
    assert syncs(lambda: out.append(sequence_loss(forces, ref, numbers, LossSettings("mepa")))) == 1
    loss, parts = out[0]
    assert syncs(lambda: "energy" in parts) == 0 and len(parts) == 5
    assert syncs(lambda: parts["force_3"]) == 1 and syncs(lambda: dict(parts)) == 0  # one transfer, then cached
    assert list(parts) == [f"force_{s}" for s in range(5)]
    assert loss.item() == pytest.approx(50 * parts["force_0"] + sum(parts[f"force_{s}"] for s in range(1, 5)))


def test_triplets_read_the_device_once(syncs: SyncCounter) -> None:
    from longmd.calculator import atoms_to_graph

    graph, _ = atoms_to_graph(crystal(), 3.0, torch.device("cpu"), torch.float64)
    assert syncs(graph.triplets) <= 1
