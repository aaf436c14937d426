"""What every benchmark result records: machine, library versions, git commit, exact command."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from longmd.atomic import atomic_write_text


def environment() -> dict:
    """Machine (CPU/GPU model, threads), library versions, git commit and the command line."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = os.environ.get("LONGMD_GIT_COMMIT")  # set where the tree was copied without .git (a GPU box)
    try:
        commit = commit or subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                                cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("numpy", "ase", "vesin_torch", "longmd", "mace", "e3nn"):
        with contextlib.suppress(Exception):  # optional packages
            versions[name] = __import__(name).__version__
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "versions": versions,
        "git_commit": commit,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def write_json(result: dict, out: Path, name: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    path.write_text(json.dumps({"environment": environment(), **result}, indent=2) + "\n")
    print(f"wrote {path}")
    return path


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------ stage caches of long benchmarks
def stage_dir(root: Path, name: str, settings: dict) -> Path:
    """``root/<name>-<hash of settings>``, with ``settings.json`` written inside (the cache key)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    path = root / f"{name}-{hashlib.sha1(text.encode()).hexdigest()[:10]}"
    path.mkdir(parents=True, exist_ok=True)
    if not (path / "settings.json").exists():
        atomic_write_text(path / "settings.json", json.dumps(settings, indent=2, sort_keys=True, default=str) + "\n")
    return path


def done(path: Path) -> dict | None:
    """The result of a finished stage (its ``done.json``), or None."""
    marker = path / "done.json"
    return json.loads(marker.read_text()) if marker.exists() else None


def mark_done(path: Path, result: dict) -> dict:
    atomic_write_text(path / "done.json", json.dumps(result, indent=2, default=str) + "\n")
    return result


def records(run: Path) -> list[dict]:
    log = run / "metrics.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []


def minutes_left(budget: float, spent_records: list[dict]) -> float:
    """Wall minutes of ``budget`` not yet spent by these epochs (so a resumed stage keeps its budget)."""
    return budget - sum(r["epoch_time_s"] for r in spent_records) / 60


def mace_frames(trajectories, indices, stride: int) -> list:
    """Every ``stride``-th frame of the trajectories ``indices`` as ``Atoms`` with ``REF_energy`` and
    ``REF_forces`` (the keys ``mace_run_train`` is told to read), no calculator attached."""
    frames = []
    for t in sorted(indices):
        for f in range(0, len(trajectories[t]), stride):
            atoms = trajectories[t].atoms(f)
            atoms.info["REF_energy"] = atoms.get_potential_energy()
            atoms.arrays["REF_forces"] = atoms.get_forces()
            atoms.calc = None
            frames.append(atoms)
    return frames


def per_start_means(rollout: dict) -> np.ndarray:
    return np.asarray(rollout["curves"]["per_start_mepa"], dtype=np.float64).mean(axis=1)
