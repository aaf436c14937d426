"""Options of ``longmd evaluate``: every protocol knob with its default and a one-line doc.

Defaults are modest (the demo's evaluation of two small models on the 57-atom example takes a few minutes
on 2 CPU cores). The paper-scale protocol is :func:`paper_scale`: 300-step rollouts, 100 ps stability runs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, get_type_hints

from longmd.config import coerce, option

PARTS = ("rollout", "frames", "stability", "jaccard", "transport", "drift", "speed")
DEFAULT_PARTS = ("rollout", "frames", "stability", "jaccard", "drift", "speed")


@dataclass
class TrackedPair:
    """Atoms i, j (0-based, within one system) whose distance is followed; events: distance > threshold_A."""

    i: int
    j: int
    threshold_A: float | None = None
    label: str = ""


@dataclass
class EvalOptions:
    # general
    seed: int = option(0, "seed of start choices, thermostat noise and initial velocities")
    device: str = option("cpu", "torch device of the models and the MD")
    dtype: str = option("float64", "float64 (precision is no confound; NVE drift is meaningful) | float32 | model")
    progress: bool = option(True, "tqdm progress bars")
    threads: int | None = option(None, "torch CPU threads during the evaluation (None = auto: the idle CPUs, at "
                             "most one per 500 atoms; logged)")
    species_reduction: str = option("sum", "how per-species force MAEs combine into MEPA: sum (the DT authors') | mean")
    skin: float = option(1.0, "Verlet-list skin, Å")
    # rollout
    rollout_steps: int = option(300, "steps of each rollout test (capped by the held-out trajectory length)")
    rollout_starts: int | None = option(None, "number of rollout starts (None = one per test trajectory)")
    batch_size: int = option(16, "rollouts (starts) run together")
    # frames
    frames_max: int = option(100, "held-out frames scored one by one (spread evenly; 0 = all)")
    frames_batch: int = option(16, "frames per model call")
    # stability
    long_steps: int = option(1000, "MD steps of each long stability run (the paper: 100 ps)")
    long_runs: int = option(2, "number of long runs (one per test trajectory first, from its first frame)")
    ensemble: str = option("nve", "nve (continues the reference dynamics exactly) | langevin | svr")
    temperature_K: float | None = option(None, "thermostat target (None = mean temperature of the reference)")
    friction_per_fs: float = option(0.01, "Langevin friction, 1/fs")
    tau_fs: float = option(100.0, "SVR relaxation time, fs")
    record_every: int = option(10, "steps between recorded frames of long runs (stability checks run every step)")
    min_distance_A: float = option(0.5, "a run fails when two atoms come closer than this, Å")
    max_temperature_K: float | None = option(None, "a run fails above this temperature (None = factor x reference max)")
    max_temperature_factor: float = option(3.0, "default bound = this x the highest reference temperature")
    rdf_mae_threshold: float = option(0.02, "verdict: stable runs score RDF-MAE at most this (the GraNNField "
                                      "study's line; see docs/evaluation.md)")
    peak_shift_A: float = option(0.1, "verdict: a first RDF peak of a species pair moved further than this, Å, is "
                                 "a lattice mismatch")
    final_fraction: float = option(0.2, "last fraction of frames used for h(r) and RDFs (model runs and reference)")
    r_max: float = option(6.0, "range of h(r) and RDFs, Å")
    n_bins: int = option(120, "bins of h(r) and RDFs")
    track: list[TrackedPair] | None = option(None, "tracked atom pairs (None = automatic: see docs/evaluation.md)")
    event_min_fs: float = option(50.0, "an event (distance above its threshold) must last this long, fs")
    # jaccard
    jaccard_cutoff: float | None = option(None, "neighbour radius, Å (None = the largest model cutoff, else 5)")
    jaccard_max_offset: int = option(20, "largest offset k (frames)")
    jaccard_level: float = option(0.95, "similarity level for the neighbor_update_every advice")
    jaccard_origin_stride: int = option(5, "every n-th frame is a time origin")
    # transport
    transport_species: str | int | None = option(None, "species whose MSD is taken (symbol or Z; None = lightest)")
    temperatures: list[float] = option([], "temperatures of the transport runs, K; held-out trajectories join the "
                                       "nearest (empty = the reference's own temperatures, grouped within 5 %)")
    transport_steps: int = option(2000, "MD steps per transport run")
    transport_ensemble: str = option("svr", "thermostat of transport runs: svr (gentle on dynamics) | langevin")
    charge: float = option(1.0, "charge of the carriers for Nernst-Einstein, e")
    transport_discard_fs: float = option(200.0, "thermalisation of each model transport run left out of the MSD, fs")
    transport_start_fs: float | None = option(None, "where the diffusive regime (the D fit) begins, fs (None = 20 % "
                                              "of the longest MSD lag)")
    transport_samples: int = option(500, "MCMC samples per walker of kinisi's D and Arrhenius posteriors")
    # drift and speed
    drift_steps: int = option(1000, "NVE steps of the drift run (reused from NVE stability runs when they ran)")
    speed_steps: int = option(50, "timed MD steps per model")
    speed_replicas: int = option(1, "systems simulated together in the speed test")
    speed_warmup: int = option(5, "untimed steps before timing")
    # stride predictors (their own parts: docs/long_stride.md)
    companion: str | None = option(None, "stride predictors: the companion potential (model spec) for the energy "
                                   "filter, the velocity-Verlet baseline at the stride and the speed comparison")
    stride_steps: int = option(50, "strides of each stride-by-stride error rollout (capped by the data)", 1)
    stride_run_strides: int = option(500, "strides of the energy-drift and thermostat runs of a predictor", 2)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> EvalOptions:
        """A copy with ``changes``, each checked against (and converted to) its field's type, e.g. a track
        given as ``[[0, 1, 1.5]]`` becomes a list of :class:`TrackedPair`."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown evaluation options {sorted(unknown)}")
        hints = get_type_hints(EvalOptions)
        return dataclasses.replace(self, **{k: coerce(v, hints[k], f"option {k}") for k, v in changes.items()})


def paper_scale(timestep_fs: float = 0.5) -> dict[str, Any]:
    """Changes for the DT paper's protocol: 300-step rollouts, 5 runs of 100 ps (a frame every 10 fs)."""
    steps = int(round(100_000 / timestep_fs))
    return {"rollout_steps": 300, "long_steps": steps, "long_runs": 5, "record_every": max(1, round(10 / timestep_fs)),
            "drift_steps": steps}


def describe() -> str:
    """Every option with its default and doc (for docs and --help)."""
    out = []
    for f in dataclasses.fields(EvalOptions):
        out.append(f"{f.name} = {f.default if f.default is not dataclasses.MISSING else f.default_factory()!r}"
                   f"  # {f.metadata['doc']}")
    return "\n".join(out)
