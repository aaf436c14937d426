"""Rollout test (the DT paper's main benchmark): NVE from held-out frames with the reference timestep; at every
step the model's forces on its own trajectory are compared with the reference forces of that step."""

from __future__ import annotations

from torch import nn

from longmd.analysis.rollout_test import BAND, rollout_errors
from longmd.evaluation.context import Context, symbol


def run(ctx: Context, name: str, model: nn.Module, entry: dict) -> dict:
    o = ctx.opts
    windows = ctx.windows
    errors = rollout_errors(
        model, ctx.trajectories, windows, batch_size=o.batch_size, species_reduction=o.species_reduction,
        skin=o.skin, device=ctx.device, dtype=ctx.dtype(model), progress=ctx.progress(f"rollout {name}"),
    )
    per_species = {symbol(z): errors.per_species[:, k] for k, z in enumerate(errors.species)}
    starts = errors.over_starts()
    per_start = errors.per_start()
    over_starts = None if starts is None else {
        "n": starts["n"], "band_percentiles": list(BAND),
        "mepa": {k: v.tolist() for k, v in starts["mepa"].items()},
        "per_species": {symbol(z): {k: v[:, j].tolist() for k, v in starts["per_species"].items()}
                        for j, z in enumerate(errors.species)},
    }
    return {
        "steps": windows[0].length - 1,
        "starts": [[ctx.trajectories[w.traj].name, w.start] for w in windows],
        "mepa_mean": errors.mean_mepa,
        "mepa_final": float(errors.mepa[-1]),
        "mepa_per_species_mean": {s: float(v.mean()) for s, v in per_species.items()},
        "position_deviation_final_A": float(errors.position_deviation[-1]),
        "failed": errors.failed,
        "failed_at_step": errors.extra.get("failed_at_step", []),
        "species_reduction": errors.species_reduction,
        "curves": {
            "mepa": errors.mepa.tolist(),
            "per_species": {s: v.tolist() for s, v in per_species.items()},
            "position_deviation_A": errors.position_deviation.tolist(),
            "over_starts": over_starts,
            # (W, L) MEPA of each start, in the order of "starts": models tested alike pair start by start
            "per_start_mepa": None if per_start is None else per_start[0].tolist(),
        },
    }
