"""What training a stride predictor adds to a run's set-up: the predictor, its data and its target scales.

The predictor advances ``model.stride_fs`` per call; the data (stored every step dt) is read every
k = stride_fs / dt frames (:func:`~longmd.data.strides.stride_view`: every offset, time-reversed copies of the
training trajectories when ``data.time_reversal``), so a window of S frames is a chain of K = S - 1 strides and
the curriculum over S is the one over K of multi-stride training. The split of the original trajectories is the
one written to ``split.json``; the derived split follows it frame by frame.
"""

from __future__ import annotations

from longmd.config import Config, ConfigError
from longmd.data.splits import Split
from longmd.data.strides import stride_view
from longmd.data.trajectory import Trajectory
from longmd.models.stride import StridePredictor
from longmd.models.stride_egnn import EquivariantStride, fit_stride_scales
from longmd.units import fs_to_ase_time

PREDICTOR_KINDS = {"stride_egnn": EquivariantStride}


def is_predictor_config(cfg: Config) -> bool:
    return cfg.model.name in PREDICTOR_KINDS and not cfg.model.terms


def stride_frames(stride: float, timestep_fs: float) -> int:
    """k = the predictor's stride / the data's timestep, which must be a whole number."""
    k = stride / timestep_fs
    if abs(k - round(k)) > 1e-6 or round(k) < 1:
        raise ValueError(f"a stride of {stride} fs is not a multiple of the data's timestep {timestep_fs} fs")
    return int(round(k))


def species_masses(trajectories: list[Trajectory]) -> dict[int, float]:
    """{Z: mass} of the data; one mass per species (else a clear error naming the trajectory)."""
    masses: dict[int, float] = {}
    for tr in trajectories:
        for z, m in zip(tr.numbers.tolist(), tr.masses.tolist(), strict=True):
            if abs(masses.setdefault(z, m) - m) > 1e-6 * m:
                raise ConfigError(f"{tr.name}: Z={z} has masses {masses[z]} and {m}; a stride predictor needs one "
                                  "mass per species")
    return masses


def build_predictor(cfg: Config, trajectories: list[Trajectory], timestep_fs: float) -> EquivariantStride:
    """The predictor of ``model.name`` / ``preset`` / ``options`` for the data's species and masses."""
    if cfg.model.terms:
        raise ConfigError("model.terms: a stride predictor has no energy terms (set model.name only)")
    if cfg.model.three_body_options() is not None:  # auto adds none under a stride predictor
        raise ConfigError("model.three_body: a stride predictor has no energy terms (set it to null or auto)")
    if cfg.model.stride_fs is None:
        raise ConfigError(f"model.name={cfg.model.name}: a stride predictor needs model.stride_fs (fs per call)")
    try:
        stride_frames(cfg.model.stride_fs, timestep_fs)
    except ValueError as exc:
        raise ConfigError(f"model.stride_fs: {exc}") from exc
    masses = species_masses(trajectories)
    try:
        return PREDICTOR_KINDS[cfg.model.name].build(sorted(masses), masses, float(cfg.model.stride_fs),
                                                     cfg.model.preset, **cfg.model.options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model ({cfg.model.name}): {exc}") from exc


def stride_data(cfg: Config, model: StridePredictor, trajectories: list[Trajectory], split: Split,
                timestep_fs: float, log, fit: bool = True) -> tuple[list[Trajectory], Split]:
    """The derived trajectories and split of the predictor's stride; an :class:`EquivariantStride`'s target
    scales are fitted on the training pairs (``fit``: a fresh model, not a resumed one)."""
    stride = model.timestep_fs
    k = stride_frames(stride, timestep_fs)
    derived, view, _ = stride_view(trajectories, split, k, reverse=cfg.data.time_reversal)
    pairs = [(w.traj, w.start) for w in view.windows("train", derived, 2)]
    if not pairs:
        raise ConfigError(f"stride {stride} fs: no training pair of frames {k} steps apart")
    log(f"stride {stride} fs = {k} frames of {timestep_fs} fs: {len(derived)} derived trajectories "
        f"({'with' if cfg.data.time_reversal else 'without'} time-reversed copies), {len(pairs)} training pairs")
    if fit and isinstance(model, EquivariantStride):
        fitted = fit_stride_scales(model, derived, pairs[:: max(1, len(pairs) // 4000)])
        per_fs = fs_to_ase_time(1.0)  # ASE momentum units -> amu·Å/fs
        log("target scales per species (σq Å, σp amu·Å/fs): "
            + ", ".join(f"Z={z}: {fitted['q'][z]:.3g}, {fitted['p'][z] * per_fs:.3g}" for z in fitted["q"]))
    return derived, view
