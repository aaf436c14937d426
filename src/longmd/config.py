"""The training configuration: one YAML file per run, every key with a default and a one-line doc.

Unknown keys are errors (a typo must never silently fall back to a default). ``longmd config --show``
prints every key with its default and doc; :func:`load_config` reads a YAML file and applies
``section.key=value`` overrides from the command line.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml


def option(default: Any, doc: str) -> Any:
    """A dataclass field with a default and a one-line doc (kept in the field's metadata)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"doc": doc})
    return field(default=default, metadata={"doc": doc})


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the file and the key."""


@dataclass
class DataConfig:
    paths: list = option(["example:h2_pd6_graphene"], "trajectory files (any ase.io format); 'example:NAME' = embedded")
    energy_key: str = option("energy", "info/calculator key of the total energy (eV)")
    forces_key: str = option("forces", "array/calculator key of the forces (eV/Å)")
    traj_id_key: str = option("traj_id", "info key splitting one file into trajectories")
    timestep_fs: Any = option(None, "timestep of the data in fs, if the files do not carry 'timestep_fs'")
    split: str = option("trajectory", "validation split: trajectory | time_blocks | frames (random, conventional)")
    val_fraction: float = option(0.125, "fraction held out for validation (trajectories, time or frames)")
    test_fraction: float = option(0.125, "fraction of trajectories held out for testing, never trained on")
    seed: int = option(0, "seed of the splits")


@dataclass
class ModelConfig:
    name: str = option("egnn", "architecture: egnn | mace (needs mace-torch)")
    preset: str = option("small", "size preset; egnn: small (CPU demo) | paper (513,281 parameters); "
                         "mace: small | medium | large (16, 64, 128 channels)")
    options: dict = option({}, "constructor overrides, e.g. egnn {hidden: 64, n_layers: 3, cutoff: 5.0}, "
                           "mace {channels: 32, max_L: 1, r_max: 5.0, correlation: 3}")


@dataclass
class TrainingConfig:
    mode: str = option("dynamic", "dynamic (S grows 1..s_max through rollouts) | conventional (S = 1 forever)")
    s_max: int = option(4, "longest training subsequence (frames) of the curriculum")
    loss: str = option("mepa", "mepa (per-species force MAE) | mae | mse (weighted MSE, MACE style)")
    species_reduction: str = option("sum", "how per-species force MAEs combine: sum (the DT authors') | mean")
    energy_weight: float = option(1.0, "weight of the per-atom energy term at S = 1")
    force_weight: float = option(1.0, "weight of the force term (all S)")
    first_step_weight: float = option(50.0, "weight of step 0's force term when S > 1 (the others weigh 1)")
    rollout_gradient: str = option("full", "full | truncated:K | detached: how far gradients flow back in time")
    neighbor_update_every: int = option(1, "reuse each reference neighbour list for k rollout steps")
    neighbor_skin: float = option(0.25, "Å added to the cutoff of reference neighbour lists (envelope-safe)")
    batch_size: int = option(32, "windows per optimisation step")
    windows_per_epoch: Any = option(None, "random subset of training windows per epoch (None = all)")
    window_stride: int = option(1, "frames between consecutive training-window starts")
    lr: float = option(1e-3, "initial learning rate (Adam)")
    lr_reset: float = option(1e-4, "learning rate set when S increases")
    lr_factor: float = option(0.33, "ReduceLROnPlateau factor")
    patience: int = option(15, "epochs without improvement before the lr drops; at the floor: before S += 1")
    min_lr: float = option(2e-6, "learning-rate floor")
    max_epochs_per_s: Any = option(None, "cap on epochs spent at one S (None = until converged)")
    max_epochs: Any = option(None, "cap on the total number of epochs (None = no cap)")
    max_minutes: Any = option(None, "wall-time budget: stop after the epoch that exceeds it (None = no cap)")
    grad_clip: float = option(1.0, "gradient-norm clip (0 = off)")
    val_length: int = option(60, "frames of each validation rollout (the paper: 60)")
    val_windows: int = option(16, "number of fixed validation rollouts")
    val_batch_size: int = option(64, "validation rollouts run together")
    dtype: str = option("float32", "float32 | float64")
    device: str = option("auto", "auto | cpu | cuda | cuda:N")
    seed: int = option(0, "seed of initialisation, sampling and thermostats")
    threads: Any = option(None, "torch CPU threads (None = torch's default)")
    progress: bool = option(True, "show progress bars")


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig, metadata={"doc": "where the AIMD data comes from"})
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"doc": "the potential"})
    training: TrainingConfig = field(default_factory=TrainingConfig, metadata={"doc": "how it is trained"})
    out: str = option("runs/train", "run directory (config, split, logs, checkpoints, plots)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "training": TrainingConfig}


def _coerce(value: Any, default: Any, where: str) -> Any:
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if isinstance(default, (int, float)) and not isinstance(value, bool) and isinstance(value, (int, float)):
        return type(default)(value) if isinstance(default, float) or float(value).is_integer() else value
    if isinstance(default, str) and isinstance(value, str):
        return value
    if isinstance(default, list) and isinstance(value, (list, str)):
        return [value] if isinstance(value, str) else list(value)
    if isinstance(default, dict) and isinstance(value, dict):
        return dict(value)
    raise ConfigError(f"{where}: expected {type(default).__name__}, got {value!r}")


def config_from_dict(raw: dict, source: str = "<dict>") -> Config:
    """Build a :class:`Config`, rejecting unknown sections and keys with a message naming them."""
    raw = dict(raw or {})
    cfg = Config()
    for name in raw:
        if name not in _SECTIONS and name != "out":
            raise ConfigError(f"{source}: unknown key '{name}' (allowed: {', '.join([*_SECTIONS, 'out'])})")
    if "out" in raw:
        cfg.out = str(raw["out"])
    for name, cls in _SECTIONS.items():
        section = raw.get(name) or {}
        if not isinstance(section, dict):
            raise ConfigError(f"{source}: section '{name}' must be a mapping")
        known = {f.name: f for f in fields(cls)}
        target = getattr(cfg, name)
        for key, value in section.items():
            if key not in known:
                raise ConfigError(f"{source}: unknown key '{name}.{key}' (allowed: {', '.join(known)})")
            setattr(target, key, _coerce(value, getattr(target, key), f"{source}: {name}.{key}"))
    return cfg


def parse_override(text: str) -> tuple[list[str], Any]:
    """``training.s_max=6`` -> (["training", "s_max"], 6); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like section.key=value")
    key, value = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(value)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or the defaults) and apply ``section.key=value`` overrides.

    ``path`` may also name a packaged config (``demo`` or ``paper``) when no such file exists.
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
    for text in overrides or []:
        keys, value = parse_override(text)
        node = raw
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{text}': '{k}' is not a section")
        node[keys[-1]] = value
    return config_from_dict(raw, source)


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
        else:
            lines.append(f"{f.name}: {getattr(cfg, f.name)}  # {f.metadata['doc']}")
    return "\n".join(lines)
