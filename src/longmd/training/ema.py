"""Exponential moving average of the weights (``training.ema_decay``), as MACE's ``--ema`` does.

After every optimisation step the average moves towards the current weights,
``avg <- d * avg + (1 - d) * w`` with ``d = min(decay, (1 + n) / (10 + n))`` after ``n`` updates (the warm-up
of torch_ema, which MACE uses: early averages forget the random initialisation quickly). Validation, and every
model file a run writes, use the averaged weights; the optimiser keeps training the raw ones, and the
checkpoint holds both, so a resumed run continues bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn


def ema_factor(decay: float, updates: int) -> float:
    """The decay applied at update number ``updates`` (1, 2, ...), warm-up included."""
    return min(decay, (1.0 + updates) / (10.0 + updates))


class WeightAverage:
    """The moving average of ``parameters`` (those a stage trains)."""

    def __init__(self, parameters: Sequence[nn.Parameter], decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay must lie in (0, 1), got {decay}")
        self.parameters = list(parameters)
        self.decay = float(decay)
        self.updates = 0
        self.average = [p.detach().clone() for p in self.parameters]

    @torch.no_grad()
    def update(self) -> None:
        """One step of the average towards the current weights."""
        self.updates += 1
        weight = 1.0 - ema_factor(self.decay, self.updates)
        torch._foreach_lerp_(self.average, [p.detach() for p in self.parameters], weight)

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block, its own ones again after it."""
        with torch.no_grad():
            raw = [p.detach().clone() for p in self.parameters]
            for p, a in zip(self.parameters, self.average):
                p.copy_(a)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, r in zip(self.parameters, raw):
                    p.copy_(r)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "average": [a.clone() for a in self.average]}

    def load_state_dict(self, state: dict) -> None:
        if len(state["average"]) != len(self.average):
            raise ValueError(f"EMA state of {len(state['average'])} tensors for {len(self.average)} parameters")
        self.updates = int(state["updates"])
        with torch.no_grad():
            for a, saved in zip(self.average, state["average"]):
                a.copy_(saved)
