"""What every part of an evaluation shares: held-out data, options, output folder, devices and dtypes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from ase.data import chemical_symbols
from torch import nn

from longmd.analysis.rollout_test import state_from_frames
from longmd.data.windows import Window
from longmd.dynamics.state import MDState
from longmd.evaluation.heldout import HeldOut, auto_track
from longmd.evaluation.options import EvalOptions, TrackedPair
from longmd.models.ase_adapter import ASECalculatorModel
from longmd.models.inference import inference_model

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def symbol(z: int) -> str:
    return chemical_symbols[int(z)]


def slug(name: str) -> str:
    """A file-name-safe version of a model name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "model"


def model_dtype(model: nn.Module) -> torch.dtype | None:
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return None


@dataclass
class Context:
    held: HeldOut
    opts: EvalOptions
    out: Path
    slugs: dict[str, str] = field(default_factory=dict)
    reference: dict = field(default_factory=dict)  # model-independent results (metrics["reference"])

    @property
    def trajectories(self):
        return self.held.trajectories

    @property
    def timestep_fs(self) -> float:
        return self.held.timestep_fs

    @property
    def device(self) -> torch.device:
        return torch.device(self.opts.device)

    def progress(self, label: str) -> str | None:
        return label if self.opts.progress else None

    def dtype(self, model: nn.Module) -> torch.dtype:
        """The dtype MD and predictions run in for ``model`` (option ``dtype``; ASE models: float64)."""
        if self.opts.dtype == "model":
            return model_dtype(model) or torch.float64
        if self.opts.dtype not in DTYPES:
            raise ValueError(f"dtype must be float64 | float32 | model, got {self.opts.dtype!r}")
        return DTYPES[self.opts.dtype]

    def prepare(self, model: nn.Module) -> nn.Module:
        """The model on the evaluation device in the evaluation dtype, eval mode, its inference path
        (:func:`~longmd.models.inference.inference_model`: a copy if anything must change)."""
        if isinstance(model, ASECalculatorModel):
            if model.pbc is None:
                pbcs = {tuple(self.trajectories[t].pbc) for t in self.held.indices}
                if len(pbcs) == 1:
                    model.pbc = np.array(pbcs.pop())
            return model.eval()
        return inference_model(model, self.device, self.dtype(model))[0]

    def state(self, starts: list[tuple[int, int]], dtype: torch.dtype) -> MDState:
        """Batched MD state (reference positions and momenta) of (trajectory, frame) starts."""
        return state_from_frames(self.trajectories, starts, self.device, dtype)

    @cached_property
    def windows(self) -> list[Window]:
        return self.held.rollout_windows(self.opts.rollout_steps, self.opts.rollout_starts, self.opts.seed)

    @cached_property
    def run_starts(self) -> list[tuple[int, int]]:
        return self.held.run_starts(max(1, self.opts.long_runs), self.opts.seed)

    @cached_property
    def reference_temperature_K(self) -> float:
        """Mean instantaneous temperature of the held-out frames."""
        return float(np.mean(np.concatenate([self.held.temperatures(t) for t in self.held.indices])))

    @cached_property
    def temperature_K(self) -> float:
        """Thermostat target (option ``temperature_K`` or the reference mean)."""
        t = self.opts.temperature_K
        return float(t) if t is not None else self.reference_temperature_K

    @cached_property
    def max_temperature_K(self) -> float:
        if self.opts.max_temperature_K is not None:
            return float(self.opts.max_temperature_K)
        ref_max = max(float(np.max(self.held.temperatures(t))) for t in self.held.indices)
        return self.opts.max_temperature_factor * max(ref_max, self.temperature_K)

    @cached_property
    def tracked(self) -> list[TrackedPair]:
        if self.opts.track is not None:
            numbers = self.held.common_numbers()
            if numbers is None and self.opts.track:
                raise ValueError("--track needs held-out trajectories with the same atoms in the same order")
            pairs = []
            for p in self.opts.track:
                for a in (p.i, p.j):
                    if not 0 <= a < len(numbers):
                        raise ValueError(f"tracked atom {a} out of range (0..{len(numbers) - 1})")
                label = p.label or f"{symbol(numbers[p.i])}{p.i}-{symbol(numbers[p.j])}{p.j}"
                pairs.append(TrackedPair(p.i, p.j, p.threshold_A, label))
            return pairs
        return auto_track(self.held)

    def slug(self, name: str) -> str:
        return self.slugs.setdefault(name, slug(name))

    def protocol(self, parts: list[str]) -> dict:
        """Everything that defines the numbers (for metrics.json and for resuming)."""
        held = self.held
        return {
            "parts": parts,
            "options": {k: v for k, v in self.opts.to_dict().items() if k not in ("progress", "threads")},
            "data": [tr.name for tr in self.trajectories],
            "held_out": {self.trajectories[t].name: _runs(held.frames[t]) for t in held.indices},
            "timestep_fs": self.timestep_fs,
        }


def _runs(frames: np.ndarray) -> list[list[int]]:
    """Frame indices as [start, stop) runs."""
    breaks = np.flatnonzero(np.diff(frames) != 1) + 1
    return [[int(b[0]), int(b[-1]) + 1] for b in np.split(frames, breaks)]
