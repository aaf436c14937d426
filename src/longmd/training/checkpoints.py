"""The training checkpoint: everything a run needs to continue bit for bit, written atomically each epoch.

Model, optimiser, scheduler, curriculum, sampler and torch RNG states, the weight average (EMA), the epoch,
the best result of the stage, the stage and where it started, and (once training has finished) why it stopped.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path
from typing import Any

import torch

from longmd.atomic import atomic_torch_save
from longmd.config import Config

NAME = "checkpoint.pt"


def read_checkpoint(out: Path) -> dict[str, Any]:
    """The checkpoint in run directory ``out``; one-line errors when it is missing or unreadable."""
    path = out / NAME
    if not path.exists():
        raise FileNotFoundError(f"--resume: no checkpoint in {out}")
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except (RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        raise ValueError(f"--resume: {path} is unreadable (truncated or corrupt?): {exc}") from exc


def write_checkpoint(trainer) -> Path:
    """Write ``trainer``'s state to its run directory (atomically)."""
    state = {
        "config": trainer.cfg.to_dict(),
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "curriculum": trainer.curriculum.state_dict(),
        "sampler": trainer.sampler.get_state(),
        "torch_rng": torch.get_rng_state(),
        "epoch": trainer.epoch,
        "best": trainer.best,
        "stage": trainer.stage_index,
        "stage_started": trainer.stage_started,
        "finished": trainer.finished,  # why the last stage stopped, once training has finished
        "ema": None if trainer.ema is None else trainer.ema.state_dict(),
    }
    return atomic_torch_save(state, trainer.out / NAME)


def restore_checkpoint(trainer, state: dict[str, Any]) -> None:
    """Put a checkpoint's state back into ``trainer`` (its stage already started)."""
    trainer.model.load_state_dict(state["model"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    trainer.curriculum.load_state_dict(state["curriculum"])
    trainer.sampler.set_state(state["sampler"])
    torch.set_rng_state(state["torch_rng"])
    trainer.epoch = int(state["epoch"])
    trainer.best = dict(state["best"])
    trainer.stage_started = int(state.get("stage_started", 0))
    if trainer.ema is not None:
        if state.get("ema") is None:
            raise ValueError("--resume: training.ema_decay is on but the checkpoint holds no weight average "
                             "(the run was started without it)")
        trainer.ema.load_state_dict(state["ema"])


BUDGET_STOP = "max_minutes"  # how the reason of a run stopped by its wall-time budget begins


def budget_stop(finished: str | None) -> bool:
    """Whether a run's stop reason is its wall-time budget (``training.max_minutes``)."""
    return bool(finished) and finished.startswith(BUDGET_STOP)


def caps_raised(caps: tuple[int, int | None, float | None], cfg: Config, finished: str) -> bool:
    """Whether a resume raised the cap that ended a finished run: the budget ``max_minutes`` when that stop
    applied, else ``s_max``, or ``max_epochs_per_s`` when that stop applied (``finished`` is the stop's reason)."""
    s_max, per_s, minutes = caps
    t = cfg.training
    if budget_stop(finished):
        return minutes is not None and (t.max_minutes is None or t.max_minutes > minutes)
    if t.mode != "conventional" and t.s_max > s_max:
        return True
    raised = per_s is not None and (t.max_epochs_per_s is None or t.max_epochs_per_s > per_s)
    return finished.startswith("max_epochs_per_s") and raised


def branch_run(source: Path, target: Path, changes: dict[str, Any] | None = None) -> Path:
    """Copy the run directory ``source`` to ``target`` (written atomically: a partial copy is never left
    behind) and set the ``training`` keys ``changes`` in the copy's checkpoint, so that ``--resume`` of
    ``target`` goes on from the same state (model, optimiser, curriculum, random generators) under new training
    settings, e.g. ``rollout_gradient`` or loss weights for a branch of a converged run. Data and model keys
    cannot change (the state would not fit them). The copy counts as finished (at a cap or converged alike), so
    the branch starts its own phase at once: the next S when ``s_max`` is raised, or its last S afresh with
    ``Trainer(extend=True)``. Returns ``target``."""
    from longmd.config import TrainingConfig, stored_config

    state = read_checkpoint(Path(source))
    config = dict(state["config"])
    training = dict(config["training"])
    names = {f for f in TrainingConfig.__dataclass_fields__}
    unknown = sorted(set(changes or {}) - names)
    if unknown:
        raise ValueError(f"branch_run: unknown training keys {unknown}")
    training.update(changes or {})
    config["training"] = training
    config["out"] = str(target)
    state["config"] = stored_config(config, f"branch of {source}").to_dict()  # checked like any config
    # a budget stop too: the branch starts its own phase (the next S, or the last S afresh), it does not go on
    finished = state.get("finished")
    state["finished"] = (finished if finished and not budget_stop(finished)
                         else f"branched from {source} at epoch {state['epoch']}")
    target = Path(target)
    partial = target.with_name(target.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    shutil.copytree(source, partial)
    atomic_torch_save(state, partial / NAME)
    partial.rename(target)
    return target
