"""Everything a training run sets up before its first epoch: the device, a validated config (and the one a
resume keeps), the model of ``model.terms``, the data and its seeded split, and the fixed validation windows.
"""

from __future__ import annotations

import re

import numpy as np
import torch

from longmd.config import Config, ConfigError
from longmd.data.batching import collate_windows
from longmd.data.reference_neighbors import ReferenceNeighbors
from longmd.data.splits import Split, random_frame_split, split_by_trajectory, split_time_blocks
from longmd.data.trajectory import Trajectory
from longmd.data.windows import Window
from longmd.dynamics.cores import parse_gradient
from longmd.examples import resolve
from longmd.io.read import read_trajectories
from longmd.models.potential import Potential
from longmd.models.reference import fit_reference_energies, parse_reference_energies
from longmd.models.registry import TermSpecError, build_potential
from longmd.runtime import check_device


def resolve_device(name: str) -> torch.device:
    """``auto`` = CUDA when there is one; a named CUDA device must exist (checked before anything is written)."""
    check_device(name, "training.device")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _check_gradient_mode(mode: str) -> None:
    try:
        create_graph, _ = parse_gradient(mode)
    except ValueError:
        create_graph = False
    if not create_graph:  # "none" parses but trains nothing
        raise ConfigError(f"training.rollout_gradient: expected full | truncated:K | detached, got {mode!r}")


def validate_config(cfg: Config) -> None:
    t = cfg.training
    choices = {
        "training.mode": (t.mode, ("dynamic", "conventional")),
        "training.loss": (t.loss, ("mepa", "mae", "mse")),
        "training.species_reduction": (t.species_reduction, ("sum", "mean")),
        "training.dtype": (t.dtype, ("float32", "float64")),
        "data.split": (cfg.data.split, ("trajectory", "time_blocks", "frames")),
    }
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"{key}: expected one of {', '.join(allowed)}, got {value!r}")
    _check_gradient_mode(t.rollout_gradient)
    reference_energies(cfg, [])  # symbols and values; which species need one is checked against the data
    if t.mode == "dynamic" and cfg.data.split == "frames" and t.s_max > 1:
        raise ConfigError("data.split=frames shuffles frames and cannot feed rollouts: use trajectory or time_blocks")


RESUMABLE_CHANGES = ("max_epochs", "max_epochs_per_s", "max_minutes", "s_max", "progress", "device", "threads")


def resume_config(saved: Config, given: Config, log) -> Config:
    """The stored config of a run, with only the run-control keys a resume may change taken from ``given``."""
    for key in RESUMABLE_CHANGES:
        new = getattr(given.training, key)
        if new != getattr(saved.training, key):
            log(f"resume: training.{key} {getattr(saved.training, key)!r} -> {new!r}")
            setattr(saved.training, key, new)
    ignored = [
        f"{section}.{k}"
        for section in ("data", "model", "training")
        for k, v in getattr(given, section).__dict__.items()
        if k not in RESUMABLE_CHANGES and v != getattr(getattr(saved, section), k)
    ]
    if ignored:
        log(f"resume: keeping the stored values of {', '.join(ignored)} (they cannot change mid-run)")
    saved.out = given.out
    return saved


def build_model(cfg: Config, species: list[int]) -> Potential:
    """The :class:`Potential` of ``model.terms`` (or the one-term shorthand), built by the registry."""
    terms = cfg.model.term_list()
    key = "model.terms" if cfg.model.terms else "model"
    try:
        return build_potential(species, [t.as_dict() for t in terms])
    except ImportError as exc:
        raise ConfigError(f"{key}: {exc}") from exc  # names the optional extra (registry.NEEDS)
    except TermSpecError as exc:
        if cfg.model.terms:
            where = f"model.terms[{exc.index}]"
            options = f"{where}.options"
        elif len(terms) > 1 and exc.index == 0:  # the shorthand's 3-body term comes first; the key holds options
            where = options = "model.three_body"
        else:
            where, options = "model", "model.options"
        unknown = re.search(r"argument '(\w+)'", str(exc.cause))
        if isinstance(exc.cause, TypeError) and unknown:  # an unknown constructor argument
            raise ConfigError(f"{options}.{unknown.group(1)}: not an option of {exc.kind} ({exc.cause})") from exc
        raise ConfigError(f"{where}: {exc.cause}") from exc
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from exc


def reference_energies(cfg: Config, species: list[int]) -> dict[int, float] | None:
    """``model.e0s`` as ``{Z: eV}`` for ``species``, or None for ``average`` (fit on the training frames)."""
    try:
        return parse_reference_energies(cfg.model.e0s, species)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def make_split(cfg: Config, trajectories: list[Trajectory]) -> Split:
    """Test trajectories are held out whole first (the same ones whatever ``data.split``, so models trained
    with different splits are tested alike); the rest is split by trajectory, time block or frame."""
    d = cfg.data
    held = split_by_trajectory(trajectories, 0.0, d.test_fraction, seed=d.seed) if d.test_fraction else None
    test = dict(held.subsets["test"]) if held else {}
    keep = [t for t in range(len(trajectories)) if t not in test]
    sub = [trajectories[t] for t in keep]
    if d.split == "trajectory":
        inner = split_by_trajectory(sub, d.val_fraction, 0.0, seed=d.seed)
    elif d.split == "time_blocks":
        inner = split_time_blocks(sub, d.val_fraction, seed=d.seed)
    else:
        inner = random_frame_split(sub, d.val_fraction, seed=d.seed)
    subsets = {name: {keep[t]: frames for t, frames in inner.subsets[name].items()} for name in ("train", "val")}
    subsets["train"] = _keep_fraction(subsets["train"], d.train_fraction, d.seed)
    subsets["test"] = test
    return Split(
        method=f"{inner.method}+test_trajectories",
        seed=d.seed,
        n_traj=len(trajectories),
        subsets=subsets,
        names=[t.name for t in trajectories],
        params={"val_fraction": d.val_fraction, "test_fraction": d.test_fraction,
                **({"train_fraction": d.train_fraction} if d.train_fraction != 1.0 else {})},
    )


def _keep_fraction(train: dict, fraction: float, seed: int) -> dict:
    """A seeded ``fraction`` of the training trajectories (at least one), whole: ``data.train_fraction``."""
    if fraction > 1.0:
        raise ConfigError(f"data.train_fraction: expected a fraction in (0, 1], got {fraction}")
    if fraction == 1.0:
        return train
    keys = sorted(train)
    n = max(1, round(fraction * len(keys)))
    chosen = np.random.default_rng([seed, 1]).choice(len(keys), size=n, replace=False)
    return {keys[k]: train[keys[k]] for k in sorted(chosen)}


def load_data(cfg: Config) -> list[Trajectory]:
    d = cfg.data
    return read_trajectories(
        [resolve(p) for p in d.paths],
        energy_key=d.energy_key,
        forces_key=d.forces_key,
        traj_id_key=d.traj_id_key,
        timestep_fs=d.timestep_fs,
    )


def fixed_validation_windows(split: Split, trajectories: list[Trajectory], length: int, count: int, seed: int):
    """``count`` windows of ``length`` frames inside the validation subset, spread evenly, fixed for the run."""
    candidates = split.windows("val", trajectories, length)
    if not candidates:
        return []
    if len(candidates) <= count:
        return candidates
    rng = np.random.default_rng(seed)
    picks = np.linspace(0, len(candidates) - 1, count).round().astype(int)
    offset = rng.integers(0, max(1, len(candidates) // count))
    return [candidates[min(len(candidates) - 1, p + offset)] for p in picks]


def all_frames(frames: np.ndarray | None, n_frames: int) -> np.ndarray:
    """Frame indices of a split entry (None = every frame of the trajectory)."""
    return np.arange(n_frames) if frames is None else np.asarray(frames)


def common_timestep(trajectories: list[Trajectory], rollouts: bool) -> float:
    """The trajectories' timestep; several are fine only when nothing is integrated (``rollouts`` False)."""
    steps = {round(tr.timestep_fs, 9) for tr in trajectories}
    if len(steps) > 1 and rollouts:
        names = ", ".join(f"{tr.name}: {tr.timestep_fs} fs" for tr in trajectories)
        raise ConfigError(f"rollouts (Dynamic Training at S > 1, validation windows of training.val_length > 1 "
                          f"frames) need one timestep for all trajectories ({names})")
    return float(trajectories[0].timestep_fs)


@torch.no_grad()
def center_reference_energies(model: torch.nn.Module, trajectories: list[Trajectory], neighbors: ReferenceNeighbors,
                              frames: list[tuple[int, int]], device: torch.device, dtype: torch.dtype,
                              n_frames: int = 256) -> None:
    """Refit the reference energies to what the network leaves unexplained.

    A fresh network adds an arbitrary offset (eV per atom) to the least-squares reference energies; the energy
    term would spend many epochs removing it (and S > 1 has no energy term at all). A least-squares fit of the
    residual on up to ``n_frames`` training frames (``(trajectory, frame)`` pairs) starts training from the right
    energies. Models without reference energies are left as they are.
    """
    if not getattr(model, "has_reference", False):
        return
    picks = frames[:: max(1, len(frames) // n_frames)][:n_frames]
    residuals, numbers = [], []
    for first in range(0, len(picks), 64):
        chunk = [Window(tr, f, 1) for tr, f in picks[first : first + 64]]
        batch = collate_windows(trajectories, chunk, neighbors, device=device, dtype=dtype)
        residuals.append((batch.energy[0] - model(batch.graph(0))).cpu().double().numpy())
        numbers += [trajectories[w.traj].numbers for w in chunk]
    shift = fit_reference_energies(numbers, np.concatenate(residuals), species=model.species)
    current = model.reference.reference_energies()
    model.set_reference_energies({z: current[z] + shift[z] for z in current})
