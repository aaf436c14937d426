"""Training stages: a run is a list of stages, each training some terms of the potential with its own settings.

``training.stages`` (a list in the YAML config) is empty by default: one stage with the ``training`` section as
it is (conventional or Dynamic Training, today's runs). Each listed stage is a mapping with

- ``name``: shown in logs and used in file names (``best_<name>.pt``), default ``stage<k>``;
- ``train``: the potential's terms trained in this stage (names of ``model.terms``) or ``all`` (default); the
  others stay frozen, bit for bit;
- any other key of the ``training`` section, overriding it for this stage only (e.g. ``mode``, ``s_max``,
  ``loss``, ``lr``, ``max_epochs`` = the stage's own epoch cap, ``position_weight``).

The inductive-bias paper's hierarchy NN2 -> NN3 -> GNN, the last with Dynamic Training, reads::

    stages:
      - {name: pair, train: [pair], mode: conventional, loss: mse}
      - {name: triplet, train: [triplet], mode: conventional, loss: mse}
      - {name: gnn, train: [egnn], mode: dynamic, s_max: 4}

A stage ends when its curriculum finishes or its caps are reached; the next one starts from the best model of
the stage before (frozen terms keep those weights) with a fresh optimiser and curriculum.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from torch import nn

from longmd.config import Config, ConfigError, TrainingConfig, coerce_field

FIXED_KEYS = ("stages", "device", "threads", "dtype", "seed", "progress", "companion")
"""Training keys that hold for the whole run: a stage cannot change them."""


@dataclass
class Stage:
    """One stage: its name, the terms it trains (None = all) and its training settings."""

    name: str
    train: list[str] | None
    training: TrainingConfig


def resolve_stages(cfg: Config) -> list[Stage]:
    """The run's stages (one from the ``training`` section when ``training.stages`` is empty)."""
    base = cfg.training
    if not base.stages:
        return [Stage("main", None, base)]
    names = {f.name: f for f in dataclasses.fields(TrainingConfig)}
    stages = []
    for k, raw in enumerate(base.stages):
        where = f"training.stages[{k}]"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: expected a mapping of keys, got {raw!r}")
        raw = dict(raw)
        name = str(raw.pop("name", f"stage{k}"))
        train = raw.pop("train", "all")
        if train != "all" and not (isinstance(train, list) and all(isinstance(t, str) for t in train) and train):
            raise ConfigError(f"{where}.train: expected 'all' or a list of term names, got {train!r}")
        changes = {}
        for key, value in raw.items():
            if key in FIXED_KEYS:
                raise ConfigError(f"{where}.{key}: holds for the whole run; set it in the training section")
            if key not in names:
                raise ConfigError(f"{where}: unknown key {key!r} (a stage takes name, train and training keys)")
            changes[key] = coerce_field(TrainingConfig, names[key], value, f"{where}.{key}")
        stages.append(Stage(name, None if train == "all" else list(train), dataclasses.replace(base, **changes)))
    if len({s.name for s in stages}) != len(stages):
        raise ConfigError(f"training.stages: stage names must differ, got {[s.name for s in stages]}")
    return stages


def trainable_parameters(stage: Stage, model: nn.Module, learnable: list[nn.Parameter]) -> list[nn.Parameter]:
    """The parameters ``stage`` trains, out of the model's ``learnable`` ones (those with ``requires_grad`` when
    the model was built; every one of them for ``train: all``). The others get ``requires_grad`` False for the
    stage, so they stay bit-identical."""
    if stage.train is None:
        chosen = list(learnable)
    else:
        parameters_of = getattr(model, "parameters_of", None)
        if parameters_of is None:
            raise ConfigError(f"stage {stage.name!r}: train: {stage.train} needs a model with named terms "
                              f"(model.terms); {type(model).__name__} has none")
        try:
            ids = {id(p) for p in parameters_of(stage.train)}
        except KeyError as exc:
            raise ConfigError(f"stage {stage.name!r}: {exc.args[0]}") from exc
        chosen = [p for p in learnable if id(p) in ids]
    ids = {id(p) for p in chosen}
    for p in learnable:
        p.requires_grad_(id(p) in ids)
    return chosen
