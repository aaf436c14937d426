"""Validation of a training run: fixed held-out windows scored by the rollout test (or held-out frames).

The windows are chosen once per run (the same for every epoch and S, so results compare). Each rank scores its
shard (every window exactly once); sums and counts are all-reduced before MEPA is formed, so every rank gets the
same value. A stride predictor has no forces: its metric is the product of its mean position and momentum
deviations.
"""

from __future__ import annotations

import torch
from torch import nn

from longmd.analysis.rollout_test import ErrorSums, RolloutErrors, rollout_errors
from longmd.config import Config, ConfigError, TrainingConfig
from longmd.data.batching import collate_windows
from longmd.data.reference_neighbors import ReferenceNeighbors
from longmd.data.splits import Split
from longmd.data.trajectory import Trajectory
from longmd.data.windows import Window
from longmd.models.base import predict
from longmd.models.stride import StridePredictor
from longmd.training import distributed
from longmd.training.setup import all_frames, fixed_validation_windows


class Validation:
    """The run's validation windows and their scoring."""

    def __init__(self, cfg: Config, split: Split, trajectories: list[Trajectory], neighbors: ReferenceNeighbors,
                 device: torch.device, dtype: torch.dtype) -> None:
        self.frames_only = cfg.data.split == "frames"
        self.trajectories, self.neighbors, self.device, self.dtype = trajectories, neighbors, device, dtype
        t = cfg.training
        if self.frames_only:
            frames = split.frames("val")
            self.windows = [Window(tr, int(f), 1) for tr, fr in enumerate(frames)
                            for f in all_frames(fr, len(trajectories[tr]))]
        else:
            self.windows = fixed_validation_windows(split, trajectories, t.val_length, t.val_windows, t.seed)
            if not self.windows:
                raise ConfigError(f"no validation window of {t.val_length} frames fits in the held-out data: "
                                  "lower training.val_length or raise data.val_fraction")
        self.species = sorted({int(z) for w in self.windows for z in trajectories[w.traj].numbers})
        self.companion = None
        if t.companion:
            from longmd.models.io import open_model  # the registry imports training code

            try:
                self.companion = open_model(t.companion, device=device).to(dtype=dtype)
            except (ValueError, OSError) as exc:
                raise ConfigError(f"training.companion: {exc}") from exc

    def __call__(self, model: nn.Module, t: TrainingConfig) -> RolloutErrors:
        model.eval()
        mine = distributed.shard(self.windows)
        sums, failed_at = ErrorSums.zeros(self.windows[0].length, len(self.species)), []
        if mine and self.frames_only:
            sums = self._frame_sums(model, mine, t.val_batch_size)
        elif mine:
            local = rollout_errors(
                model, self.trajectories, mine, batch_size=t.val_batch_size, species=self.species,
                species_reduction=t.species_reduction, device=self.device, dtype=self.dtype,
                energy_model=self.companion if isinstance(model, StridePredictor) else None,
            )
            sums, failed_at = local.sums, local.extra["failed_at_step"]
        pooled = sums.from_vector(distributed.all_reduce_sum(sums.to_vector()))
        failed_at = sorted(distributed.all_gather_list(failed_at))
        return RolloutErrors.from_sums(self.species, pooled, t.species_reduction, {"failed_at_step": failed_at})

    @staticmethod
    def metric(model: nn.Module, errors: RolloutErrors) -> float:
        """What the curriculum and best models follow: mean MEPA; for a predictor the product of its mean position
        (Å) and momentum (amu·Å/fs) deviations, times the energy error (eV/atom) of the predicted states when
        ``training.companion`` is given (FlashMD picks its best model by such a product)."""
        if isinstance(model, StridePredictor):
            energy = errors.mean_energy_deviation
            return errors.mean_deviation * errors.mean_momentum_deviation * (1.0 if energy is None else energy)
        return errors.mean_mepa

    @staticmethod
    def metric_label(model: nn.Module, companion: bool = False) -> str:
        """The metric's name and unit in logs."""
        if not isinstance(model, StridePredictor):
            return "val MEPA (eV/Å)"
        return "val |dq|x|dp|x|dE| (Å·amu·Å/fs·eV/atom)" if companion else "val |dq|x|dp| (Å·amu·Å/fs)"

    @torch.no_grad()
    def _frame_sums(self, model: nn.Module, windows: list[Window], batch_size: int) -> ErrorSums:
        """Single-frame validation (random frame split): force errors of held-out frames."""
        sums = ErrorSums.zeros(1, len(self.species))
        sums.n_windows = len(windows)
        for i in range(0, len(windows), batch_size):
            batch = collate_windows(self.trajectories, windows[i : i + batch_size], self.neighbors,
                                    device=self.device, dtype=self.dtype)
            with torch.enable_grad():
                pred = predict(model, batch.graph(0)).forces.detach()
            sums.add_forces(pred.cpu().double().numpy()[None], batch.forces[:1].cpu().double().numpy(),
                            batch.numbers.cpu().numpy(), self.species)
        return sums



