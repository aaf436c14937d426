"""The subsequence curriculum of Dynamic Training.

Training starts at S = 1 (single frames, ordinary force matching). A ReduceLROnPlateau scheduler lowers
the learning rate on the validation metric; once the rate sits at its floor and ``patience`` further epochs
bring no improvement (or ``max_epochs_per_s`` is reached), training at this S has *converged*: S grows by
one and the learning rate is reset to ``lr_reset``. Training ends when S = ``s_max`` converges.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

PROGRESS = ("s", "epochs_in_s", "best", "stale_at_floor")


@dataclass
class Decision:
    """What one validation result means for the curriculum."""

    improved: bool  # best validation metric of this S so far: save ``best_S{S}``
    advance: bool  # this S converged and S < s_max: S += 1, reset the learning rate
    finished: bool  # s_max converged: stop
    reason: str = ""  # why this S stopped (advance or finished): which of the two stops applied


@dataclass
class Curriculum:
    s_max: int
    patience: int
    min_lr: float
    max_epochs_per_s: int | None = None
    threshold: float = 1e-4  # relative improvement that counts (as ReduceLROnPlateau's default)
    s: int = 1
    epochs_in_s: int = 0
    best: float = math.inf
    stale_at_floor: int = 0

    def __post_init__(self) -> None:
        if self.s_max < 1:
            raise ValueError(f"s_max must be >= 1, got {self.s_max}")

    def update(self, metric: float, lr: float) -> Decision:
        """Record the validation ``metric`` of an epoch that was trained at learning rate ``lr``."""
        self.epochs_in_s += 1
        improved = metric < self.best * (1 - self.threshold) if math.isfinite(self.best) else math.isfinite(metric)
        if improved:
            self.best = metric
            self.stale_at_floor = 0
        elif lr <= self.min_lr * (1 + 1e-9):
            self.stale_at_floor += 1
        capped = self.max_epochs_per_s is not None and self.epochs_in_s >= self.max_epochs_per_s
        if self.stale_at_floor >= self.patience:
            reason = f"no improvement for patience={self.patience} epochs at the lr floor min_lr={self.min_lr:g}"
        elif capped:
            reason = f"max_epochs_per_s={self.max_epochs_per_s} reached"
        else:
            return Decision(improved, False, False)
        if self.s >= self.s_max:
            return Decision(improved, False, True, reason)
        self.advance()
        return Decision(improved, True, False, reason)

    def advance(self) -> None:
        """S += 1 with a fresh stage (also when a finished run is resumed with a higher ``s_max``)."""
        self.s += 1
        self.restart()

    def restart(self) -> None:
        """A fresh stage of the current S (progress forgotten; S unchanged)."""
        self.epochs_in_s, self.best, self.stale_at_floor = 0, math.inf, 0

    def state_dict(self) -> dict:
        """Progress only; the settings (s_max, patience, ...) come from the run's config."""
        return {k: v for k, v in asdict(self).items() if k in PROGRESS}

    def load_state_dict(self, state: dict) -> None:
        for key in PROGRESS:
            setattr(self, key, state[key])
