"""Hierarchical training of a decomposed potential (pair -> triplet -> ...), on a synthetic pair + three-body
potential whose pair function is known: the pair stage recovers it, later stages leave it bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from conftest import train_killed_in_epoch
from longmd.config import load_config
from longmd.models.egnn import polynomial_envelope
from longmd.models.io import load_model
from longmd.training.trainer import Trainer
from test_egnn import graph_of

CUTOFF = 3.0
MORSE = {(14, 14): (0.6, 2.3), (6, 14): (1.0, 1.9), (6, 6): (0.4, 1.6)}  # (well depth eV, minimum Å)
ALPHA = 1.6  # 1/Å
LAMBDA = 0.25  # eV, the three-body strength


def true_pair(r: torch.Tensor, a: int, b: int) -> torch.Tensor:
    """Morse pair energy (eV) of species a, b, smoothly cut off at 3 Å."""
    depth, r0 = MORSE[tuple(sorted((a, b)))]
    x = 1.0 - torch.exp(-ALPHA * (r - r0))
    return depth * (x * x - 1.0) * polynomial_envelope(r / CUTOFF)


def true_energy(positions: torch.Tensor, atoms: Atoms) -> torch.Tensor:
    """Pair energy plus a Stillinger-Weber-like three-body energy lambda (cos θ + 1/3)^2 u(r_ij) u(r_ik)."""
    graph = graph_of([atoms], cutoff=CUTOFF)
    graph = graph.replace(positions=positions)
    v = graph.edge_vectors()
    r = v.norm(dim=1)
    z = graph.numbers
    i, j = graph.edge_index
    pair = sum(0.5 * (true_pair(r, a, b) * ((z[i] == a) & (z[j] == b))).sum() for a in (6, 14) for b in (6, 14))
    e_ij, e_ik = graph.triplet_edges()
    cos = (v[e_ij] * v[e_ik]).sum(1) / (r[e_ij] * r[e_ik])
    u = polynomial_envelope(r / CUTOFF)
    three = 0.5 * LAMBDA * ((cos + 1.0 / 3.0) ** 2 * u[e_ij] * u[e_ik]).sum()
    return pair + three


def synthetic_clusters(path, n: int = 160, seed: int = 0):
    """``n`` random Si/C clusters, a third dimers, the others of 3-5 atoms (no two closer than 1.7 Å), each its
    own trajectory."""
    rng = np.random.default_rng(seed)
    frames = []
    while len(frames) < n:
        size = 2 if len(frames) % 3 == 0 else int(rng.integers(3, 6))
        positions = rng.normal(scale=1.2, size=(size, 3))
        d = np.linalg.norm(positions[:, None] - positions[None], axis=-1)[np.triu_indices(size, 1)]
        if d.min() < 1.7 or d.max() > 3.2:
            continue
        atoms = Atoms(numbers=rng.choice([6, 14], size), positions=positions)
        x = torch.tensor(positions, requires_grad=True)
        e = true_energy(x, atoms)
        (grad,) = torch.autograd.grad(e, x)
        atoms.set_momenta(np.zeros((size, 3)))
        atoms.calc = SinglePointCalculator(atoms, energy=float(e.detach()), forces=-grad.numpy())
        atoms.info.update(traj_id=len(frames), timestep_fs=1.0)
        frames.append(atoms)
    write(path, frames, format="extxyz")
    return path


@pytest.fixture(scope="module")
def clusters(tmp_path_factory):
    return synthetic_clusters(tmp_path_factory.mktemp("clusters") / "clusters.extxyz")


STAGES = ("training.stages=[{name: two, train: [pair], max_epochs: 20}, "
          "{name: three, train: [triplet], max_epochs: 8}]")


def decomposed_config(data, out, *extra: str):
    return load_config(None, [
        f"data.paths=[{data}]", "data.split=frames", "data.val_fraction=0.15", "data.test_fraction=0",
        "model.terms=[{name: pair, options: {hidden: 16}}, {name: triplet, options: {hidden: 16}}]",
        "training.mode=conventional", "training.loss=mse", "training.energy_weight=1.0", "training.force_weight=1.0",
        "model.e0s={C: 0.0, Si: 0.0}", "training.batch_size=16", "training.lr=3e-3", "training.patience=2",
        "training.lr_factor=0.5", "training.min_lr=1e-4", "training.progress=false",
        "training.dtype=float64", "training.threads=1", f"out={out}", STAGES, *extra,
    ])


def _flat(module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()])


def test_pair_stage_recovers_the_pair_function_and_later_stages_keep_it(clusters, tmp_path) -> None:
    trainer = Trainer(decomposed_config(clusters, tmp_path / "run"), log=lambda *_: None)
    initial_triplet = _flat(trainer.model.term("triplet")).clone()
    result = trainer.run()
    stage_two = [r for r in result.records if r["stage"] == "two"]
    stage_three = [r for r in result.records if r["stage"] == "three"]
    assert len(stage_two) == 20 and len(stage_three) == 8
    pair_only = load_model(tmp_path / "run" / "best_two.pt")
    final = load_model(tmp_path / "run" / "best.pt")
    # Frozen terms stay bit for bit: the triplet during the pair stage (at its start, zero energy), the pair after.
    assert torch.equal(_flat(pair_only.term("triplet")), initial_triplet)
    assert torch.equal(_flat(pair_only.term("pair")), _flat(final.term("pair")))
    assert not torch.equal(_flat(final.term("triplet")), initial_triplet)
    # The triplet stage explains what the pair term cannot: the validation force error drops.
    assert min(r["val_mepa"] for r in stage_three) < 0.7 * min(r["val_mepa"] for r in stage_two)
    # The learned pair curve against the true one where the clusters sample distances (1.7-3 Å). The pair stage
    # fits the pair part of the three-body energy too (positive here), hence the tolerance.
    r = torch.linspace(1.8, 3.0, 50, dtype=torch.float64)
    term, scale = pair_only.term("pair"), float(pair_only.reference.scale)
    index = {z: k for k, z in enumerate(pair_only.species)}
    for (a, b), (depth, _) in MORSE.items():
        with torch.no_grad():
            learned = scale * term.pair_energy(r, torch.full_like(r, index[a], dtype=torch.long),
                                               torch.full_like(r, index[b], dtype=torch.long))
        error = (learned - true_pair(r, a, b)).abs().max().item()
        assert error < 0.2 * depth, (a, b, error)


HIERARCHY = ("training.stages=[{name: pair, train: [pair], mode: conventional, loss: mse, max_epochs: 2}, "
             "{name: triplet, train: [triplet], mode: conventional, loss: mse, max_epochs: 1}, "
             "{name: gnn, train: [egnn], mode: dynamic, s_max: 2, max_epochs_per_s: 1}]")
TERMS = ("model.terms=[{name: pair, options: {hidden: 8}}, {name: triplet, options: {hidden: 8}}, "
         "{name: egnn, options: {hidden: 8, n_rff: 8, n_layers: 1, zero_readout: true}}]")


def test_pair_triplet_gnn_with_dynamic_training_last_resumes_bit_for_bit(emt_data, tmp_path, monkeypatch) -> None:
    """NN2 -> NN3 -> GNN, the last with Dynamic Training (S = 1, 2), killed in the GNN stage's first epoch and
    resumed: the same weights as the run that was never interrupted."""
    def config(out):
        return load_config(None, [
            f"data.paths=[{emt_data}]", "data.split=time_blocks", "data.val_fraction=0.25", "data.test_fraction=0.25",
            TERMS, HIERARCHY, "training.windows_per_epoch=4", "training.val_length=4", "training.val_windows=1",
            "training.batch_size=4", "training.progress=false", "training.dtype=float64", "training.threads=1",
            f"out={out}",
        ])

    full = Trainer(config(tmp_path / "full"), log=lambda *_: None)
    result = full.run()
    assert [(r["stage"], r["S"]) for r in result.records] == [("pair", 1), ("pair", 1), ("triplet", 1), ("gnn", 1),
                                                                ("gnn", 2)]
    train_killed_in_epoch(config(tmp_path / "killed"), 3, monkeypatch)
    resumed = Trainer(config(tmp_path / "killed"), resume=True, log=lambda *_: None).run()
    assert [(r["stage"], r["S"]) for r in resumed.records] == [(r["stage"], r["S"]) for r in result.records]
    # last.pt, not the trainer's model: with a weight average (the default) the files hold the average and the
    # trainer the raw weights Adam trains
    last = {run: _flat(load_model(tmp_path / run / "last.pt")) for run in ("full", "killed")}
    assert torch.equal(last["full"], last["killed"])
    best = {name: load_model(tmp_path / "full" / f"best_{name}.pt") for name in ("pair", "triplet", "gnn")}
    assert torch.equal(_flat(best["pair"].term("pair")), _flat(best["gnn"].term("pair")))
    assert torch.equal(_flat(best["triplet"].term("triplet")), _flat(best["gnn"].term("triplet")))
    # The EGNN is untouched until its stage.
    assert float(best["triplet"].term("egnn").readout[-1].weight.detach().abs().max()) == 0.0
    assert float(best["gnn"].term("egnn").readout[-1].weight.detach().abs().max()) > 0.0
