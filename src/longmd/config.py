"""The training configuration: one YAML file per run, every key with a default and a one-line doc.

Unknown keys are errors (a typo must never silently fall back to a default), and values are checked against
the declared types. ``longmd config`` prints every key with its default and doc; :func:`load_config` reads a
YAML file and applies ``section.key=value`` overrides from the command line.
"""

from __future__ import annotations

import dataclasses
import math
import types
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml


def option(default: Any, doc: str, minimum: float | None = None, above: float | None = None,
           below: float | None = None) -> Any:
    """A dataclass field with a default, a one-line doc and optional bounds kept in its metadata: ``minimum``
    (value >= it), ``above`` (value > it) and ``below`` (value < it)."""
    bounds = {"min": minimum, "above": above, "below": below}
    metadata = {"doc": doc, **{k: v for k, v in bounds.items() if v is not None}}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=metadata)
    return field(default=default, metadata=metadata)


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the file and the key."""


@dataclass
class DataConfig:
    paths: list[str] = option(["example:h2_pd6_graphene"],
                              "trajectory files (any ase.io format); 'example:NAME' = embedded")
    energy_key: str = option("energy", "info/calculator key of the total energy (eV)")
    forces_key: str = option("forces", "array/calculator key of the forces (eV/Å)")
    traj_id_key: str = option("traj_id", "info key splitting one file into trajectories")
    timestep_fs: float | None = option(None, "timestep of the data in fs, if the files do not carry 'timestep_fs'")
    split: str = option("trajectory", "validation split: trajectory | time_blocks | frames (random, conventional)")
    val_fraction: float = option(0.125, "fraction held out for validation (trajectories, time or frames)")
    test_fraction: float = option(0.125, "fraction of trajectories held out for testing, never trained on")
    seed: int = option(0, "seed of the splits")
    train_fraction: float = option(1.0, "fraction of the training trajectories kept (seeded choice, at least one; "
                                   "the rest unused: data-efficiency studies)", above=0)
    time_reversal: bool = option(True, "stride predictors: also train on every training trajectory run backwards "
                                 "(frames reversed, momenta negated), as FlashMD does")


@dataclass
class TermConfig:
    """One energy term of the potential (an item of ``model.terms``)."""

    name: str = option("egnn", "term name, unique (egnn, lj, ...); also its kind unless 'kind' is given")
    kind: str | None = option(None, "egnn | mace (needs mace-torch) | schnet | painn (need schnetpack) | lj | pair | "
                                   "triplet (None = the name)")
    preset: str | None = option(None, "size preset of the kind (egnn: small | paper; mace: small | medium | large; "
                                     "schnet, painn: small | medium)")
    options: dict = option({}, "constructor overrides, e.g. egnn {hidden: 64}, lj {epsilon: 0.01, sigma: 2.5}")

    def as_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind or self.name, "preset": self.preset, "options": dict(self.options)}


# architectures whose messages see distances only (longmd's EGNN has no coordinate updates): bond angles reach
# them through two-hop paths alone, so ``three_body: auto`` adds an explicit 3-body term under them
DISTANCE_ONLY = ("egnn", "schnet")
THREE_BODY_AUTO = {"hidden": 32, "cutoff": 3.0}  # measured under the EGNN (docs/results.md, "A three-body term")


@dataclass
class ModelConfig:
    terms: list[TermConfig] = option([], "energy terms summed with the reference energies, each "
                                     "{name, kind, preset, options}, e.g. [{name: egnn, preset: small}, "
                                     "{name: lj, options: {epsilon: 0.01, sigma: 2.5}}]; [] = the one term of "
                                     "name/preset/options below")
    name: str = option("egnn", "one-term shorthand: architecture egnn | mace (needs mace-torch) | schnet | painn "
                       "(need schnetpack); or stride_egnn, a "
                       "stride predictor (positions and momenta model.stride_fs ahead, FlashMD-style; no terms)")
    preset: str = option("small", "one-term shorthand: size preset; egnn: small (CPU demo) | paper (513,281 "
                         "parameters); mace: small | medium | large (16, 64, 128 channels); schnet, painn: "
                         "small | medium (32, 64 features)")
    options: dict = option({}, "one-term shorthand: constructor overrides, e.g. egnn {hidden: 64, n_layers: 3, "
                           "cutoff: 5.0}, mace {channels: 32, max_L: 1, r_max: 5.0, correlation: 3}")
    three_body: str | dict | None = option("auto", "with the shorthand: a short-range 3-body term (model.terms' "
                                           "triplet) added under the architecture: auto = {hidden: 32, cutoff: 3.0} "
                                           "under the distance-only ones (egnn, schnet), none under mace and painn "
                                           "(they see angles), nor under lj/pair/triplet or with model.terms | "
                                           "{triplet options} under any | null = none")

    stride_fs: float | None = option(None, "stride predictors: time one call advances, fs (a multiple of the data's "
                                     "timestep; the data is read every stride_fs / timestep frames)", above=0)
    e0s: str | dict = option("average", "reference energies per species (eV): average (least squares over the "
                             "training frames, refitted as training goes: MACE's --E0s average) | {Z or symbol: "
                             "eV} for every species, kept fixed, e.g. {H: -1.1, 46: -1.5}")

    def term_list(self) -> list[TermConfig]:
        """The canonical form: ``terms``, or the shorthand: name/preset/options as one term, after the 3-body
        term of ``three_body`` if it adds one."""
        if self.terms:
            return list(self.terms)
        main = TermConfig(name=self.name, preset=self.preset, options=dict(self.options))
        extra = self.three_body_options()
        return [main] if extra is None else [TermConfig(name="triplet", options=extra), main]

    def three_body_options(self) -> dict | None:
        """The options of the 3-body term ``three_body`` adds to the shorthand's architecture (None: no term)."""
        if isinstance(self.three_body, dict):
            return dict(self.three_body)
        if self.three_body not in ("auto", None):
            raise ValueError(f"model.three_body must be auto, a mapping of triplet options or null, "
                             f"got {self.three_body!r}")
        if self.three_body == "auto" and self.name in DISTANCE_ONLY:
            return dict(THREE_BODY_AUTO)
        return None


@dataclass
class TrainingConfig:
    mode: str = option("dynamic", "dynamic (S grows 1..s_max through rollouts) | conventional (S = 1 forever)")
    s_max: int = option(4, "longest training subsequence (frames) of the curriculum", 1)
    loss: str = option("mepa", "mepa (per-species force MAE) | mae | mse (weighted MSE, MACE style; with "
                       "energy_weight p_e and force_weight p_f the inductive-bias paper's loss)")
    species_reduction: str = option("sum", "how per-species force MAEs combine: sum (the DT authors') | mean")
    energy_weight: float = option(1.0, "weight of the per-atom energy term at S = 1", 0)
    force_weight: float = option(1.0, "weight of the force term (all S)", 0)
    first_step_weight: float = option(50.0, "weight of step 0's force term when S > 1 (the others weigh 1)", 0)
    rollout_gradient: str = option("full", "full | truncated:K | detached: how far gradients flow back in time")
    neighbor_update_every: int = option(1, "reuse each reference neighbour list for k rollout steps", 1)
    neighbor_skin: float = option(0.25, "Å added to the cutoff of reference neighbour lists (envelope-safe)", 0)
    batch_size: int = option(32, "windows per optimisation step", 1)
    windows_per_epoch: int | None = option(None, "random subset of training windows per epoch (None = all)", 1)
    window_stride: int = option(1, "frames between consecutive training-window starts")
    lr: float = option(1e-3, "initial learning rate (Adam)", above=0)
    lr_reset: float = option(1e-4, "learning rate set when S increases", above=0)
    lr_factor: float = option(0.33, "ReduceLROnPlateau factor", above=0, below=1)
    patience: int = option(15, "epochs without improvement before the lr drops; at the floor: before S += 1", 0)
    min_lr: float = option(2e-6, "learning-rate floor", 0)
    max_epochs_per_s: int | None = option(None, "cap on epochs spent at one S (None = until converged)", 1)
    max_epochs: int | None = option(None, "cap on the total number of epochs (None = no cap)", 0)
    max_minutes: float | None = option(None, "wall-time budget of the whole run (its epochs' time, resumes included): "
                                       "stop after the epoch that exceeds it (None = no cap)", 0)
    grad_clip: float = option(1.0, "gradient-norm clip (0 = off)", 0)
    ema_decay: float = option(0.99, "exponential moving average of the weights, used for validation and every "
                              "saved model (MACE's --ema, 0.99; 0 = off, as the DT paper)", 0, below=1)
    val_length: int = option(60, "frames of each validation rollout (the paper: 60)", 1)
    val_windows: int = option(16, "number of fixed validation rollouts", 1)
    val_batch_size: int = option(64, "validation rollouts run together", 1)
    dtype: str = option("float32", "float32 | float64")
    device: str = option("auto", "auto | cpu | cuda | cuda:N")
    seed: int = option(0, "seed of initialisation, sampling and thermostats")
    threads: int | None = option(None, "torch CPU threads (None = auto: the idle CPUs, at most one per 500 atoms "
                                 "of a batch; the log says what was chosen)", 1)
    progress: bool = option(True, "show progress bars")
    position_weight: float = option(0.0, "weight of the per-step position error (Å, steps >= 1) of rollouts", 0)
    momentum_weight: float = option(0.0, "weight of the per-step momentum error (amu·Å/fs, steps >= 1) of rollouts",
                                    0)
    companion: str | None = option(None, "stride predictors: a potential (model file, mace:PATH or ase:module:Class) "
                                   "whose total energy of the predicted states also enters the validation metric "
                                   "(FlashMD's position x momentum x energy error)")
    stages: list = option([], "training stages, each {name, train: [terms] | all, training keys...} "
                          "(empty: one stage from this section; docs/training.md)")


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig, metadata={"doc": "where the AIMD data comes from"})
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"doc": "the potential"})
    training: TrainingConfig = field(default_factory=TrainingConfig, metadata={"doc": "how it is trained"})
    out: str = option("runs/train", "run directory (config, split, logs, checkpoints, plots)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "training": TrainingConfig}


_TYPE_NAMES = {type(None): "null", bool: "true/false"}


def _type_name(hint: Any) -> str:
    if hint in _TYPE_NAMES:
        return _TYPE_NAMES[hint]
    if get_origin(hint) in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(hint))
    if get_args(hint):
        return f"{get_origin(hint).__name__}[{', '.join(_type_name(a) for a in get_args(hint))}]"
    return getattr(hint, "__name__", str(hint))


def _number(value: Any) -> float | None:
    """A number or numeric string (YAML reads ``1e-3`` as a string) as a float; None for anything else."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        return float(value)
    except (ValueError, OverflowError):  # OverflowError: an int beyond any float
        return None


def coerce(value: Any, hint: Any, where: str) -> Any:
    """``value`` as the declared type ``hint`` (bool, int, float, str, list[...], dict, X | None, a dataclass
    from a list or mapping of its fields), or a :class:`ConfigError` naming ``where``."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return coerce(value, rest[0], where)
        for arg in rest:
            try:
                return coerce(value, arg, where)
            except ConfigError:
                pass
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint in (int, float):
        if hint is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        number = _number(value)
        if number is not None and not math.isfinite(number):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        if number is not None and (hint is float or number.is_integer()):
            return hint(number)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif hint is list or origin is list:
        items = [value] if isinstance(value, str) else value
        if isinstance(items, (list, tuple)):
            return [coerce(v, args[0], f"{where}[{k}]") for k, v in enumerate(items)] if args else list(items)
    elif hint is dict or origin is dict:
        if isinstance(value, dict):
            return dict(value)
    elif dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        names = [f.name for f in fields(hint)]
        given = dict(zip(names, value, strict=False)) if isinstance(value, (list, tuple)) else value
        if isinstance(given, dict) and not set(given) <= set(names):
            unknown = ", ".join(repr(k) for k in given if k not in names)
            raise ConfigError(f"{where}: unknown key {unknown} (allowed: {', '.join(names)})")
        if isinstance(given, dict) and set(given) <= set(names) and len(value) <= len(names):
            hints = get_type_hints(hint)
            try:
                return hint(**{k: coerce(v, hints[k], f"{where}.{k}") for k, v in given.items()})
            except TypeError:  # a required field is missing
                pass
    raise ConfigError(f"{where}: expected {_type_name(hint)}, got {value!r}")


def coerce_field(cls: type, f: dataclasses.Field, value: Any, where: str) -> Any:
    value = coerce(value, get_type_hints(cls)[f.name], where)
    if value is None or isinstance(value, (list, dict, str, bool)):
        return value
    checks = (("min", lambda b: value >= b, ">="), ("above", lambda b: value > b, ">"),
              ("below", lambda b: value < b, "<"))
    for key, holds, sign in checks:
        bound = f.metadata.get(key)
        if bound is not None and not holds(bound):
            raise ConfigError(f"{where}: must be {sign} {bound}, got {value!r}")
    return value


def config_from_dict(raw: dict, source: str = "<dict>", sources: dict[str, str] | None = None) -> Config:
    """Build a :class:`Config`, rejecting unknown sections and keys and values of the wrong type.

    Errors name ``source``, or ``sources["section.key"]`` for keys that came from elsewhere (an override).
    """
    raw = dict(raw or {})
    sources = sources or {}
    cfg = Config()
    for name in raw:
        if name not in _SECTIONS and name != "out":
            where = sources.get(name, source)
            raise ConfigError(f"{where}: unknown key '{name}' (allowed: {', '.join([*_SECTIONS, 'out'])})")
    if "out" in raw:
        cfg.out = str(raw["out"])
    for name, cls in _SECTIONS.items():
        section = raw.get(name) or {}
        if not isinstance(section, dict):
            raise ConfigError(f"{sources.get(name, source)}: section '{name}' must be a mapping")
        known = {f.name: f for f in fields(cls)}
        target = getattr(cfg, name)
        for key, value in section.items():
            where = sources.get(f"{name}.{key}", source)
            if key not in known:
                raise ConfigError(f"{where}: unknown key '{name}.{key}' (allowed: {', '.join(known)})")
            setattr(target, key, coerce_field(cls, known[key], value, f"{where}: {name}.{key}"))
    _check_model(cfg.model, sources, source)
    return cfg


def _check_model(model: ModelConfig, sources: dict[str, str], source: str) -> None:
    """``terms`` and the one-term shorthand exclude each other; ``three_body`` is auto, a mapping or null."""
    default = ModelConfig()
    try:
        model.three_body_options()
    except ValueError as exc:
        raise ConfigError(f"{sources.get('model.three_body', source)}: {exc}") from exc
    shorthand = [k for k in ("name", "preset", "options") if getattr(model, k) != getattr(default, k)]
    shorthand += ["three_body"] if isinstance(model.three_body, dict) else []  # auto adds nothing to terms
    if model.terms and shorthand:
        where = sources.get("model.terms", source)
        hint = (" (a triplet term there instead of model.three_body, or model.three_body=null)"
                if shorthand[0] == "three_body" else "")
        raise ConfigError(f"{where}: model.terms and model.{shorthand[0]} both given: put every term in "
                          f"model.terms{hint}")


# keys added since runs began storing their config, with the value that reproduces what a run without them ran
ADDED_KEYS = {"model": {"three_body": None}}


def stored_config(raw: dict, source: str) -> Config:
    """The config a run stored (its checkpoint's), keys added since it was written at their old behaviour."""
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for section, keys in ADDED_KEYS.items():
        raw.setdefault(section, {})
        for key, value in keys.items():
            raw[section].setdefault(key, value)
    return config_from_dict(raw, source)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``training.s_max=6`` -> (["training", "s_max"], 6); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like section.key=value")
    key, value = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(value)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or the defaults) and apply ``section.key=value`` overrides.

    ``path`` may also name a packaged config (``demo``, ``paper`` or ``stride``) when no such file exists.
    """
    raw: dict = {}
    packaged = Path(__file__).parent / "configs" / f"{path}.yaml"
    if path is not None and not Path(path).exists() and Path(str(path)).name == str(path) and packaged.is_file():
        path = packaged
    source = str(path) if path else "<defaults>"
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read config: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: a config must be a mapping of sections")
    sources: dict[str, str] = {}
    for text in overrides or []:
        keys, value = parse_override(text)
        node = raw
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{text}': '{k}' is not a section")
        node[keys[-1]] = value
        sources[".".join(keys[:2])] = f"override '{text}'"
        sources.setdefault(keys[0], f"override '{text}'")  # for errors about the section itself
    return config_from_dict(raw, source, sources)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def describe() -> str:
    """Every key with its default and one-line doc, as YAML with comments."""
    lines = []
    cfg = Config()
    for f in fields(Config):
        if f.name in _SECTIONS:
            lines.append(f"{f.name}:  # {f.metadata['doc']}")
            for sub in fields(_SECTIONS[f.name]):
                value = yaml.safe_dump(getattr(getattr(cfg, f.name), sub.name), default_flow_style=True).strip()
                value = value.removesuffix("\n...").removesuffix("...").strip()
                lines.append(f"  {sub.name}: {value}  # {sub.metadata['doc']}")
                item = get_args(get_type_hints(_SECTIONS[f.name])[sub.name])
                if item and dataclasses.is_dataclass(item[0]):  # a list of mappings: document their keys
                    example = item[0]()
                    for key in fields(item[0]):
                        default = yaml.safe_dump(getattr(example, key.name), default_flow_style=True)
                        default = default.strip().removesuffix("...").strip()
                        lines.append(f"  #   {key.name}: {default}  # {key.metadata['doc']}")
        else:
            lines.append(f"{f.name}: {getattr(cfg, f.name)}  # {f.metadata['doc']}")
    return "\n".join(lines)
