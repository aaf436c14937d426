"""Single-frame errors on held-out frames: energy and force MAE/RMSE, per species, and parity plots."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from longmd.analysis.force_errors import energy_mae_per_atom, energy_rmse_per_atom, force_error_summary
from longmd.analysis.plots import plot_parity
from longmd.data.graph import Graph
from longmd.evaluation.context import Context, symbol
from longmd.models.base import predict
from longmd.neighbors import batched_neighbor_list
from longmd.progress import bars_disabled


def select_frames(ctx: Context) -> list[tuple[int, int]]:
    """All held-out (trajectory, frame) pairs, thinned evenly to at most ``frames_max``."""
    frames = [(t, int(f)) for t in ctx.held.indices for f in ctx.held.frames[t]]
    n = ctx.opts.frames_max
    if n and len(frames) > n:
        keep = np.unique(np.linspace(0, len(frames) - 1, n).round().astype(int))
        frames = [frames[k] for k in keep]
    return frames


def run(ctx: Context, name: str, model: nn.Module, entry: dict) -> dict:
    frames = select_frames(ctx)
    dtype = ctx.dtype(model)
    pred_f, ref_f, numbers, pred_e, ref_e, n_atoms = [], [], [], [], [], []
    batch = max(1, ctx.opts.frames_batch)
    for first in tqdm(range(0, len(frames), batch), desc=ctx.progress(f"frames {name}"),
                      disable=bars_disabled(ctx.opts.progress), leave=False):
        chunk = frames[first : first + batch]
        s = ctx.state(chunk, dtype)
        edge_index, shifts = batched_neighbor_list(s.positions, s.cell, s.pbc, s.system, model.cutoff)
        out = predict(model, Graph(s.positions, s.numbers, s.cell, s.system, edge_index, shifts))
        pred_f.append(out.forces.detach().cpu().double().numpy())
        pred_e.append(out.energy.detach().cpu().double().numpy())
        for t, f in chunk:
            tr = ctx.trajectories[t]
            ref_f.append(tr.forces[f])
            ref_e.append(tr.energy[f])
            numbers.append(tr.numbers)
            n_atoms.append(tr.n_atoms)
    pf, rf, z = np.concatenate(pred_f), np.concatenate(ref_f), np.concatenate(numbers)
    pe, re_, na = np.concatenate(pred_e), np.asarray(ref_e), np.asarray(n_atoms)
    summary = force_error_summary(torch.from_numpy(pf), torch.from_numpy(rf), torch.from_numpy(z))
    e_args = (torch.from_numpy(pe), torch.from_numpy(re_), torch.from_numpy(na))
    slug = ctx.slug(name)
    plots = [
        plot_parity(pf, rf, ctx.out / f"parity_forces_{slug}.png", numbers=z, model=name),
        plot_parity(1e3 * pe / na, 1e3 * re_ / na, ctx.out / f"parity_energy_{slug}.png", quantity="energy",
                    unit="meV/atom", model=name),
    ]
    return {
        "n_frames": len(frames),
        "force_mae": summary["force_mae"],
        "force_rmse": summary["force_rmse"],
        "force_mae_per_species": {symbol(k): v for k, v in summary["force_mae_per_species"].items()},
        "force_rmse_per_species": {symbol(k): v for k, v in summary["force_rmse_per_species"].items()},
        "mepa": summary["mepa_sum" if ctx.opts.species_reduction == "sum" else "mepa_mean"],
        "energy_mae_per_atom": float(energy_mae_per_atom(*e_args)),
        "energy_rmse_per_atom": float(energy_rmse_per_atom(*e_args)),
        "energy_mean_error_per_atom": float(np.mean((pe - re_) / na)),
        "plots": [p.name for p in plots],
    }
