"""What every benchmark result records: machine, library versions, git commit, exact command."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import signal
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


# ------------------------------------------------------------------------------------------------------ MACE
def mace_run_train_exe() -> str | None:
    """``mace_run_train`` of this Python's environment (else of the PATH), or None when mace-torch is absent."""
    here = shutil.which("mace_run_train", path=str(Path(sys.executable).parent))
    return here or shutil.which("mace_run_train")


def run_mace_train(path: Path, train: list, valid: list | float, *, channels: int, max_l: int, r_max: float,
                   seed: int, max_epochs: int, minutes: float | None = None, device: str = "cpu",
                   threads: int | None = None, extra: tuple[str, ...] = (), resume: bool = False) -> dict:
    """``mace_run_train`` with its defaults, from scratch (no foundation model), in ``path`` (``mace.model``).

    ``train`` and a list ``valid`` are ``Atoms`` with ``REF_energy``/``REF_forces`` (:func:`mace_frames`); a float
    ``valid`` is MACE's own random validation fraction of ``train``. The budget is ``max_epochs``, or ``minutes``
    of wall time: MACE has no time limit, so it is stopped then and finished from its latest checkpoint (saved on
    every improvement of the validation loss, EMA weights when ``--ema`` is in ``extra``) with
    ``--restart_latest``. ``resume`` continues what ``path`` holds (its frames, checkpoints and the budget already
    spent, ``spent_s.json``); otherwise ``path`` is emptied first. ``threads`` pins OpenMP/MKL. Returns the
    command, epochs run, training minutes and frame count.
    """
    import ase.io

    exe = mace_run_train_exe()
    if exe is None:
        raise SystemExit("mace_run_train not found (pip install 'longmd[mace]')")
    if not resume and path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    if not (path / "train.xyz").exists():
        if not isinstance(valid, float):
            ase.io.write(path / "valid.xyz", valid)
        ase.io.write(path / "train.xyz", train)
    validation = [f"--valid_fraction={valid}"] if isinstance(valid, float) else [f"--valid_file={path / 'valid.xyz'}"]
    cmd = [exe, "--name=mace", f"--train_file={path / 'train.xyz'}", *validation, "--E0s=average", "--model=MACE",
           f"--num_channels={channels}", f"--max_L={max_l}", f"--r_max={r_max}", f"--device={device}",
           "--energy_key=REF_energy", "--forces_key=REF_forces", "--default_dtype=float32", f"--seed={seed}", *extra]
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    spent_file = path / "spent_s.json"
    spent = json.loads(spent_file.read_text())["s"] if spent_file.exists() else 0.0
    command = [*cmd, *(["--restart_latest"] if resume else []), f"--max_num_epochs={max_epochs}"]
    log_path = path / "train.log"
    print(f"mace_run_train -> {log_path}", flush=True)
    with open(log_path, "a") as log:
        start, stopped = time.perf_counter(), False
        proc = subprocess.Popen(command, cwd=path, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # its own process group: the budget stops all of it
        try:
            proc.wait(timeout=None if minutes is None else max(1.0, 60 * minutes - spent))
        except subprocess.TimeoutExpired:
            stopped = True
        except BaseException:  # Ctrl-C or any error here: leave no trainer behind
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
            raise
        if stopped:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
        spent += time.perf_counter() - start
        atomic_write_text(spent_file, json.dumps({"s": spent}) + "\n")
        if proc.returncode and not stopped:
            raise SystemExit(f"mace_run_train failed (exit {proc.returncode}); see {log_path}")
        if stopped or not (path / "mace.model").exists():
            # the loop ends at once (epoch >= max_num_epochs); MACE then writes its model from that checkpoint
            subprocess.run([*cmd, "--restart_latest", f"--max_num_epochs={_mace_latest_epoch(path)}"], cwd=path,
                           env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    return {"command": " ".join(command), "epochs": _mace_epochs_run(log_path),
            "best_epoch": _mace_latest_epoch(path), "train_minutes": spent / 60, "stopped_by_budget": stopped,
            "frames": len(ase.io.read(path / "train.xyz", index=":"))}


def _mace_latest_epoch(path: Path) -> int:
    """The epoch of MACE's latest checkpoint (``checkpoints/mace_run-SEED_epoch-N.pt``, its best validation loss
    so far): restarted with ``--max_num_epochs=N`` MACE trains no further and writes that model."""
    names = sorted(path.glob("checkpoints/*_epoch-*.pt"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    if not names:
        raise SystemExit(f"MACE saved no checkpoint within the budget (see {path / 'train.log'})")
    return int(names[-1].stem.rsplit("-", 1)[1])


def _mace_epochs_run(log: Path) -> int:
    """Epochs MACE finished (its log has one ``Epoch N:`` validation line per epoch)."""
    return sum(" Epoch " in line and "loss=" in line for line in log.read_text().splitlines())
