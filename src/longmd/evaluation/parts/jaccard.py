"""Neighbourhood smoothness along the reference (model-independent): Jaccard similarity of every atom's
neighbour set at offsets k = 1..K, per species, and the advised ``neighbor_update_every``."""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from longmd.analysis.neighborhood import jaccard_profile, max_reuse_offset
from longmd.evaluation.context import Context, symbol
from longmd.progress import bars_disabled


def reference(ctx: Context, cutoff: float) -> dict:
    o = ctx.opts
    held = ctx.held
    k_max = min(o.jaccard_max_offset, min(len(held.block(t)) for t in held.indices) - 1)
    if k_max < 1:
        return {"skipped": "held-out trajectories shorter than 2 frames"}
    sums: dict[str, np.ndarray] = {}
    weights: dict[str, float] = {}
    mean = np.zeros(k_max)
    worst_atom = np.ones(k_max)
    for t in tqdm(held.indices, desc=ctx.progress("jaccard"), disable=bars_disabled(o.progress), leave=False):
        tr, block = ctx.trajectories[t], held.block(t)
        prof = jaccard_profile(tr.positions[block], tr.cell[block], tr.pbc, cutoff, k_max, numbers=tr.numbers,
                               origin_stride=max(1, o.jaccard_origin_stride))
        for k, z in enumerate(prof.species):
            n = float(np.sum(tr.numbers == z))
            key = symbol(z)
            sums[key] = sums.get(key, 0.0) + n * prof.per_species[:, k]
            weights[key] = weights.get(key, 0.0) + n
        mean += prof.mean / len(held.indices)
        worst_atom = np.minimum(worst_atom, prof.per_atom.min(1))
    per_species = {k: v / weights[k] for k, v in sums.items()}
    curve = np.min(np.stack(list(per_species.values())), axis=0)
    return {
        "cutoff_A": cutoff,
        "frame_interval_fs": ctx.timestep_fs,
        "ks": list(range(1, k_max + 1)),
        "per_species": {k: v.tolist() for k, v in per_species.items()},
        "mean": mean.tolist(),
        "min_atom": worst_atom.tolist(),
        "level": o.jaccard_level,
        "advised_neighbor_update_every": max_reuse_offset(curve, o.jaccard_level),
        "advised_by_mean": max_reuse_offset(mean, o.jaccard_level),
    }
