"""The trainer: conventional force matching and Dynamic Training on one loop.

A training point is a window of S consecutive reference frames. The model's forces on the first frame drive
the shared velocity-Verlet integrator (:mod:`longmd.dynamics`) for S - 1 steps from the stored positions and
momenta, with neighbour lists taken from the reference trajectory; every step's forces are compared with
the reference forces of that step (:mod:`longmd.training.losses`) and gradients flow back through the
rollout (``rollout_gradient``). S = 1 is ordinary force matching, so *conventional* training is the same loop
with S fixed to 1. The curriculum (:mod:`longmd.training.curriculum`) raises S on convergence.

Everything a run needs to continue lives in ``checkpoint.pt`` (written atomically after every epoch):
model, optimiser, scheduler, curriculum and random-generator states, so ``--resume`` continues bit-for-bit.

Under ``torchrun`` (:mod:`longmd.training.distributed`) every rank runs this same loop on its slice of each
optimisation step's windows (``batch_size`` per rank) and of the validation windows; gradients and
validation sums are all-reduced, so all ranks keep identical models and curriculum decisions, and rank 0
alone writes files.
"""

from __future__ import annotations

import contextlib
import functools
import math
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from longmd.analysis.rollout_test import RolloutErrors
from longmd.atomic import atomic_write_text
from longmd.config import Config, ConfigError, save_config, stored_config
from longmd.data.batching import collate_windows
from longmd.data.reference_neighbors import ReferenceNeighbors
from longmd.data.windows import Window
from longmd.models.base import EnergyModel
from longmd.models.io import load_model, save_model
from longmd.models.reference import init_reference
from longmd.models.stride import StridePredictor
from longmd.progress import bars_disabled
from longmd.runtime import set_threads
from longmd.training import distributed
from longmd.training.checkpoints import (
    BUDGET_STOP,
    budget_stop,
    caps_raised,
    read_checkpoint,
    restore_checkpoint,
    write_checkpoint,
)
from longmd.training.curriculum import Curriculum
from longmd.training.ema import WeightAverage
from longmd.training.losses import LossSettings
from longmd.training.run_log import (
    RunLog,
    peak_memory_mb,
    plot_best_per_s,
    plot_learning_curve,
    summary_table,
    trained_minutes,
)
from longmd.training.setup import (
    all_frames,
    build_model,
    center_reference_energies,
    common_timestep,
    load_data,
    make_split,
    reference_energies,
    resolve_device,
    resume_config,
    validate_config,
)
from longmd.training.stages import Stage, resolve_stages, trainable_parameters
from longmd.training.stride_setup import build_predictor, is_predictor_config, stride_data
from longmd.training.validation import Validation
from longmd.training.window_rollouts import window_loss


class TrainingDiverged(RuntimeError):
    """The loss or its gradients became non-finite; the last good checkpoint is kept."""


@dataclass
class TrainResult:
    out: Path
    best_model: Path
    best_val_mepa: float
    best_s: int
    epochs: int
    records: list[dict]


class Trainer:
    """Train a model as ``cfg`` says, in the run directory ``cfg.out``."""

    def __init__(self, cfg: Config, resume: bool = False, log=None, model: torch.nn.Module | None = None,
                 extend: bool = False) -> None:
        """``extend`` (with ``resume``): a finished run trains on although no cap was raised: its last S starts
        afresh (new curriculum of that S, learning rate reset to ``lr_reset``, the optimiser's moments kept), as
        S += 1 would do without raising S; e.g. more S = 1 epochs as the budget-matched rival of Dynamic
        Training branched from the same converged checkpoint. Bound it with ``max_epochs`` / ``max_minutes``."""
        self.out = Path(cfg.out)
        self.main = distributed.is_main()  # rank 0 (or a single process): the one that logs and writes
        # Epoch lines are flushed at once, so logs redirected to a file (nohup, SLURM) follow the run.
        log = log or functools.partial(print, flush=True)
        self.log = log = log if self.main else _quiet
        self.checkpoint = None
        caps = (cfg.training.s_max, cfg.training.max_epochs_per_s, cfg.training.max_minutes)
        if resume:
            self.checkpoint = read_checkpoint(self.out)
            saved = stored_config(self.checkpoint["config"], str(self.out / "checkpoint.pt"))
            caps = (saved.training.s_max, saved.training.max_epochs_per_s, saved.training.max_minutes)
            cfg = resume_config(saved, cfg, log)
        self.finished = None if self.checkpoint is None else self.checkpoint.get("finished")
        self.extend = extend and bool(self.finished) and not caps_raised(caps, cfg, self.finished)
        self.nothing_to_do = bool(self.finished) and not caps_raised(caps, cfg, self.finished) and not self.extend
        validate_config(cfg)
        self.cfg = cfg
        self.stages = resolve_stages(cfg)
        self.stage_index = 0
        t = cfg.training
        self.device = distributed.setup(resolve_device(t.device))
        self.dtype = torch.float64 if t.dtype == "float64" else torch.float32
        torch.manual_seed(t.seed)
        np.random.seed(t.seed)
        random.seed(t.seed)
        if self.main and not self.nothing_to_do:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out / "config.yaml")

        self.trajectories = load_data(cfg)
        if self.device.type == "cpu":
            set_threads(t.threads, max(tr.n_atoms for tr in self.trajectories) * t.batch_size, log)
        self.split = make_split(cfg, self.trajectories)
        if self.main and not self.nothing_to_do:
            atomic_write_text(self.out / "split.json", self.split.to_json())
        species = sorted({int(z) for tr in self.trajectories for z in tr.numbers})
        if model is None and is_predictor_config(cfg):
            model = build_predictor(cfg, self.trajectories, common_timestep(self.trajectories, True))
        model = build_model(cfg, species) if model is None else model
        if isinstance(model, StridePredictor):  # the data seen every stride, the split carried over
            self.trajectories, self.split = stride_data(cfg, model, self.trajectories, self.split,
                                                        common_timestep(self.trajectories, True), log,
                                                        fit=self.checkpoint is None)
        self.model = model.to(device=self.device, dtype=self.dtype)
        self.learnable = [p for p in self.model.parameters() if p.requires_grad]
        train_frames = [
            (t, f)
            for t, frames in enumerate(self.split.frames("train"))
            for f in all_frames(frames, len(self.trajectories[t]))
        ]
        if not train_frames:
            raise ConfigError("the split leaves no training frames")
        self.reference = init_reference(
            self.model,
            [self.trajectories[t].numbers for t, _ in train_frames],
            np.array([self.trajectories[t].energy[f] for t, f in train_frames]),
            [self.trajectories[t].forces[f] for t, f in train_frames[:: max(1, len(train_frames) // 2000)]],
            given=reference_energies(cfg, species),
        )
        self.s_max = max(1 if s.training.mode == "conventional" else s.training.s_max for s in self.stages)
        rollouts = self.s_max > 1 or (cfg.data.split != "frames" and t.val_length > 1)
        self.timestep_fs = common_timestep(self.trajectories, rollouts)
        with distributed.local_main_first():  # one rank per node builds the cache, the others load it
            self.neighbors = ReferenceNeighbors.build(
                self.trajectories, (self.model.cutoff or 0.0) + t.neighbor_skin, progress=t.progress and self.main
            )
        if self.checkpoint is None:
            self._center_energies(train_frames)
        self.train_frames = train_frames
        self.validation = Validation(cfg, self.split, self.trajectories, self.neighbors, self.device, self.dtype)
        self.sampler = torch.Generator().manual_seed(t.seed)
        self.epoch = 0
        self.stage_started = 0  # epoch at which the current stage began
        self._start_stage(int(self.checkpoint.get("stage", 0)) if self.checkpoint is not None else 0)
        if self.checkpoint is not None:
            restore_checkpoint(self, self.checkpoint)
            log(f"resumed from {self.out / 'checkpoint.pt'} at epoch {self.epoch}, S={self.curriculum.s}")
        distributed.broadcast_module(self.model)  # identical already (same seed or checkpoint); made certain
        self.run_log = RunLog(self.out, keep=self.epoch if self.checkpoint is not None else 0,
                              write=self.main and not self.nothing_to_do)

    # ----------------------------------------------------------------------------------------- set-up
    @property
    def stage(self) -> Stage:
        return self.stages[self.stage_index]

    @property
    def t(self):
        """The training settings of the current stage."""
        return self.stage.training

    def _start_stage(self, index: int) -> None:
        """Optimiser, scheduler, curriculum and loss of stage ``index``; the terms it does not train are frozen."""
        self.stage_index = index
        t = self.t
        self.loss_settings = LossSettings(
            kind=t.loss, species_reduction=t.species_reduction, energy_weight=t.energy_weight,
            force_weight=t.force_weight, first_step_weight=t.first_step_weight, position_weight=t.position_weight,
            momentum_weight=t.momentum_weight,
        )
        # Gradients left by the stage before on terms now frozen would enter gradient clipping (a resumed run has
        # none): every stage starts without any.
        self.model.zero_grad(set_to_none=True)
        trained = trainable_parameters(self.stage, self.model, self.learnable)
        self.optimizer = torch.optim.Adam(trained, lr=t.lr)
        self.ema = WeightAverage(trained, t.ema_decay) if t.ema_decay else None
        self.scheduler = self._new_scheduler()
        # A stride predictor learns from pairs of frames at least: its curriculum starts at S = 2.
        s_min = 2 if isinstance(self.model, StridePredictor) else 1
        self.curriculum = Curriculum(s_max=max(s_min, 1 if t.mode == "conventional" else t.s_max),
                                     patience=t.patience, min_lr=t.min_lr, max_epochs_per_s=t.max_epochs_per_s,
                                     s=s_min)
        self.best = {"val_mepa": math.inf, "S": 0, "epoch": -1}

    def _new_scheduler(self) -> torch.optim.lr_scheduler.ReduceLROnPlateau:
        t = self.t
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, factor=t.lr_factor, patience=t.patience, min_lr=t.min_lr
        )

    # ------------------------------------------------------------------------------------- training
    def _center_energies(self, frames: list[tuple[int, int]]) -> None:
        if self.cfg.model.e0s == "average":  # given reference energies (model.e0s) stay exactly as given
            center_reference_energies(self.model, self.trajectories, self.neighbors, frames, self.device, self.dtype)

    def validate(self) -> RolloutErrors:
        """Errors of the fixed validation windows (:class:`~longmd.training.validation.Validation`)."""
        return self.validation(self.model, self.t)

    def train_windows(self, s: int) -> list[Window]:
        return self.split.windows("train", self.trajectories, s, stride=self.t.window_stride)

    def batch_loss(self, windows: list[Window], gradient: str | None = None) -> tuple[torch.Tensor, dict]:
        """Loss of one batch of windows of equal length (the DT rollout for length > 1)."""
        t = self.t
        batch = collate_windows(self.trajectories, windows, self.neighbors, device=self.device, dtype=self.dtype)
        return window_loss(self.model, batch, self.timestep_fs, gradient or t.rollout_gradient, self.loss_settings,
                           t.neighbor_update_every)

    def train_epoch(self, s: int) -> float:
        """One pass over the epoch's windows in a seeded order. With several ranks each optimisation step
        takes ``batch_size x world_size`` consecutive windows of that order (the same on every rank) and
        rank r trains on the r-th slice of ``batch_size``; the last step may leave a rank without windows."""
        t = self.t
        windows = self.train_windows(s)
        if not windows:
            raise ConfigError(f"no training window of S={s} frames fits in the training data")
        order = torch.randperm(len(windows), generator=self.sampler)
        if t.windows_per_epoch:
            order = order[: int(t.windows_per_epoch)]
        self.model.train()
        losses = []
        per_step, mine = t.batch_size * distributed.world_size(), distributed.rank() * t.batch_size
        batches = [order[i + mine : i + mine + t.batch_size] for i in range(0, len(order), per_step)]
        bar = tqdm(batches, desc=f"epoch {self.epoch} S={s}", leave=False,
                   disable=bars_disabled(t.progress and self.main))  # redirected: the epoch line only
        for number, idx in enumerate(bar):
            losses.append(self._optimise([windows[int(i)] for i in idx], s, number))
            bar.set_postfix(loss=f"{losses[-1]:.4g}")
        return float(np.mean(losses))

    def _optimise(self, windows: list[Window], s: int, number: int) -> float:
        """One optimisation step on this rank's windows, gradients averaged over ranks; returns the loss."""
        t = self.t
        self.optimizer.zero_grad(set_to_none=True)
        loss = None
        if windows:
            loss, _ = self.batch_loss(windows)
            loss.backward()
        value = distributed.reduce_gradients(self.model.parameters(), loss, len(windows))
        if not math.isfinite(value):
            raise TrainingDiverged(
                f"non-finite loss at S={s}, epoch {self.epoch}, batch {number}; "
                f"the last good checkpoint is {self.out / 'checkpoint.pt'}"
            )
        if t.grad_clip:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
            if not torch.isfinite(norm):
                raise TrainingDiverged(f"non-finite gradient at S={s}, epoch {self.epoch}, batch {number}")
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update()
        return value

    def averaged(self):
        """A block in which the model holds the weights it is validated and saved with (the EMA when on)."""
        return self.ema.applied() if self.ema is not None else contextlib.nullcontext()

    # ----------------------------------------------------------------------------------- the loop
    def run(self) -> TrainResult:
        if self.nothing_to_do:
            raise_ = ("training.max_minutes" if budget_stop(self.finished)
                      else "training.s_max or training.max_epochs_per_s")
            self.log(f"nothing to do: the run in {self.out} finished at epoch {self.epoch} ({self.finished}); "
                     f"raise {raise_} to train further")
            return TrainResult(self.out, self.out / "best.pt", self.best["val_mepa"], self.best["S"], self.epoch,
                               self.run_log.records)
        if self.finished:  # a finished run resumed with a raised cap (a raised budget: the same S goes on)
            # s_max raised: the next S; extend: the last S again
            if not budget_stop(self.finished) and (self.curriculum.s < self.curriculum.s_max or self.extend):
                if self.curriculum.s < self.curriculum.s_max:
                    self.curriculum.advance()
                else:
                    self.curriculum.restart()
                    self.log(f"extend: S={self.curriculum.s} trains on from the finished run, "
                             f"lr -> {self.t.lr_reset:g}")
                for group in self.optimizer.param_groups:
                    group["lr"] = self.t.lr_reset
                self.scheduler = self._new_scheduler()
            self.finished = None
        self.log(self.model.summary() if hasattr(self.model, "summary") else str(self.model))
        self.log(
            f"data: {len(self.trajectories)} trajectories; split {self.split.method}; "
            f"{len(self.validation.windows)} validation windows of {self.validation.windows[0].length} frames; "
            f"device {self.device}"
        )
        while True:
            t = self.t
            if t.max_epochs is not None and self.epoch - self.stage_started >= t.max_epochs:
                self.log(f"stopping{self._stage_label}: max_epochs={t.max_epochs} reached")
                if self._next_stage():
                    continue
                break
            spent = trained_minutes(self.run_log.records)  # the whole run, resumes included
            if t.max_minutes is not None and distributed.agree(spent >= t.max_minutes):
                self.finished = f"{BUDGET_STOP}={t.max_minutes:g} reached ({spent:.1f} min trained)"
                self.log(f"stopping: {self.finished}")
                self._save_checkpoint()  # a resume says "nothing to do" unless the budget is raised
                break
            s = self.curriculum.s
            lr = self.optimizer.param_groups[0]["lr"]
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.device)
            start = time.perf_counter()
            train_loss = self.train_epoch(s)
            if s > 1:
                # Rollout losses (S > 1) have no energy term, so the energy offset drifts; per-species reference
                # energies shift energies only (forces are unchanged), so refitting them keeps energies right.
                self._center_energies(self.train_frames)
            with self.averaged():
                errors = self.validate()
                val = self.validation.metric(self.model, errors)
            self.scheduler.step(val if math.isfinite(val) else math.inf)
            decision = self.curriculum.update(val, lr)
            record = {
                "epoch": self.epoch, "S": s, "lr": lr, "train_loss": train_loss, "val_mepa": val,
                "epoch_time_s": time.perf_counter() - start, "peak_memory_MB": peak_memory_mb(self.device),
                "improved": decision.improved,
                **{f"val_mepa_Z{z}": float(v) for z, v in zip(errors.species, errors.per_species.mean(0))},
                **({"val_position_dev_A": errors.mean_deviation, "val_momentum_dev": errors.mean_momentum_deviation,
                    "val_energy_dev_eV_per_atom": errors.mean_energy_deviation}
                   if isinstance(self.model, StridePredictor) else {}),
                **({"stage": self.stage.name} if len(self.stages) > 1 else {}),
            }
            prefix = f"best_{self.stage.name}" if len(self.stages) > 1 else "best"
            if decision.improved:
                self._save_model(f"{prefix}_S{s}.pt", s, val)
                if val < self.best["val_mepa"]:
                    self.best = {"val_mepa": val, "S": s, "epoch": self.epoch}
                    self._save_model(f"{prefix}.pt", s, val)
                    if prefix != "best" and self.stage_index == len(self.stages) - 1:
                        self._save_model("best.pt", s, val)
            self.epoch += 1
            self.log(
                f"epoch {record['epoch']:4d}  S={s}  lr={lr:.2e}  loss={train_loss:.4f}  {self._metric}={val:.4f}"
                f"  {record['epoch_time_s']:.1f}s" + ("  *" if decision.improved else "")
            )
            if decision.advance:
                self.log(f"S={s} stopped after {self.curriculum_epochs(s)} epochs ({decision.reason}): "
                         f"S -> {self.curriculum.s}")
                for group in self.optimizer.param_groups:
                    group["lr"] = t.lr_reset
                self.scheduler = self._new_scheduler()
            self._save_model("last.pt", s, val)
            self.run_log.append(record)  # before the checkpoint: a resume drops a record it has no checkpoint for
            self.finished = decision.reason if decision.finished else None
            self._save_checkpoint()
            if decision.finished:
                self.log(f"S={s} (s_max) stopped{self._stage_label} ({decision.reason}): training finished")
                if self._next_stage():
                    self.finished = None  # the next stage starts
                    self._save_checkpoint()
                    continue
                break
        return self._finish()

    @property
    def _metric(self) -> str:
        return Validation.metric_label(self.model, self.validation.companion is not None)

    @property
    def _stage_label(self) -> str:
        return f" (stage {self.stage.name})" if len(self.stages) > 1 else ""

    def _next_stage(self) -> bool:
        """Move to the next stage, from the best model of this one; False after the last stage."""
        if self.stage_index + 1 >= len(self.stages):
            return False
        best = self.out / f"best_{self.stage.name}.pt"
        if best.exists():
            self.model.load_state_dict(load_model(best, device=self.device).state_dict())
        self.stage_started = self.epoch
        self._start_stage(self.stage_index + 1)
        self.log(f"stage {self.stage.name} starts at epoch {self.epoch} (training "
                 f"{'all terms' if self.stage.train is None else ', '.join(self.stage.train)}; from {best.name})")
        return True

    def curriculum_epochs(self, s: int) -> int:
        """Epochs trained at S = s so far in this stage (this epoch included)."""
        stage = self.stage.name if len(self.stages) > 1 else None
        return 1 + sum(r["S"] == s and r.get("stage") == stage for r in self.run_log.records)

    def _finish(self) -> TrainResult:
        records = self.run_log.records
        plot = plot_learning_curve(records, self.out / "learning_curve.png") if records and self.main else None
        if records and self.main:
            plot_best_per_s(records, self.out / "best_per_s.png")
        table = summary_table(records, "validation " + self._metric.removeprefix("val ")) if records else ""
        if self.main:
            atomic_write_text(self.out / "summary.md", f"# Training summary\n\n{table}\n")
        best_path = self.out / "best.pt"
        self.log("\n" + table)
        if self.main and not best_path.exists():
            self._best_of_earlier_stage(best_path)
        self.log(f"best model: {best_path} (S={self.best['S']}, {self._metric} {self.best['val_mepa']:.4f})")
        if plot:
            self.log(f"learning curve: {plot}")
        return TrainResult(self.out, best_path, self.best["val_mepa"], self.best["S"], self.epoch, records)

    def _best_of_earlier_stage(self, best_path: Path) -> None:
        """A run stopped (a cap, a budget) in a stage before that stage improved on anything: ``best.pt`` becomes
        the best model of the latest stage that has one, said in the log, so a finished run always has one."""
        for stage in reversed(self.stages[: self.stage_index + 1] if len(self.stages) > 1 else []):
            earlier = self.out / f"best_{stage.name}.pt"
            if earlier.exists():
                shutil.copyfile(earlier, best_path)
                self.log(f"warning: stopped in stage {self.stage.name} before the last stage ({self.stages[-1].name}) "
                         f"saved a best model: {best_path.name} is {earlier.name}, stage {stage.name}'s")
                return
        self.log(f"warning: no best model was saved (no epoch finished); {best_path.name} does not exist")

    def _provenance(self, s: int, val: float) -> dict:
        return {"S": s, "epoch": self.epoch, "val_mepa": val, "config": self.cfg.to_dict(), "mode": self.t.mode,
                **({"stage": self.stage.name} if len(self.stages) > 1 else {})}

    # --------------------------------------------------------------------------------- checkpoints
    def _save_model(self, name: str, s: int, val: float) -> None:
        if self.main:
            with self.averaged():
                save_model(self.model, self.out / name, metadata=self._provenance(s, val))

    def _save_checkpoint(self) -> None:
        """Rank 0 writes; every rank waits until the file is complete (so any restart finds it)."""
        if self.main:
            write_checkpoint(self)
        distributed.barrier()

def _quiet(*_args, **_kwargs) -> None:
    """The log of ranks other than 0."""


def train(cfg: Config, resume: bool = False, log=None, model: torch.nn.Module | None = None,
          extend: bool = False) -> TrainResult:
    """Train as ``cfg`` says (see :class:`Trainer`; ``model`` instead of the config's); under torchrun, on all
    its processes."""
    try:
        return Trainer(cfg, resume=resume, log=log, model=model, extend=extend).run()
    finally:
        distributed.cleanup()


def load_best(out: str | Path, device: str = "cpu") -> EnergyModel:
    """The best model of a finished run."""
    return load_model(Path(out) / "best.pt", device=device)
