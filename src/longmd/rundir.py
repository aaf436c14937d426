"""Run directories of ``train``, ``simulate``, ``evaluate`` and ``lammps``: an ``--out`` that holds an earlier run
of the command is refused unless it is continued (``--resume``) or replaced (``--overwrite``, which deletes what that
command writes there, and nothing else), so the files of two runs are never mixed."""

from __future__ import annotations

import shutil
from pathlib import Path

# What each command writes in its --out (glob patterns); the first patterns mark an earlier run.
OWNED: dict[str, tuple[str, ...]] = {
    "train": ("config.yaml", "checkpoint.pt", "best.pt", "best_S*.pt", "last.pt", "split.json", "metrics.jsonl",
              "metrics.csv", "summary.md", "learning_curve.png"),
    "simulate": ("summary.json", "thermo.csv", "checkpoint.pt", "traj_*.extxyz", "traj_*.traj", "stopped_*.extxyz",
                 "thermo.png"),
    "evaluate": ("metrics.json", "report.md", "runs", "*.png"),
    "lammps": ("log.lammps", "summary.json"),
}
RESUMABLE = ("train", "simulate", "evaluate")  # the commands with --resume
MARKERS = {"train": 3, "simulate": 3, "evaluate": 1, "lammps": 2}  # how many of the first patterns mark a run


def _matches(out: Path, patterns: tuple[str, ...]) -> list[Path]:
    return sorted({p for pattern in patterns for p in out.glob(pattern)})


def prepare_out(out: str | Path, command: str, resume: bool = False, overwrite: bool = False) -> None:
    """Check ``out`` for ``command`` before anything is written; with ``overwrite``, delete what it owns there."""
    out = Path(out)
    if resume and overwrite:
        raise ValueError("--resume and --overwrite exclude each other")
    if resume or not out.is_dir():
        return
    patterns = OWNED[command]
    if not overwrite:
        earlier = _matches(out, patterns[: MARKERS[command]])
        if earlier:
            names = ", ".join(p.name for p in earlier)
            resume_hint = "--resume to continue it or " if command in RESUMABLE else ""
            raise ValueError(f"--out {out} holds an earlier {command} run ({names}): pass {resume_hint}"
                             f"--overwrite to replace it, or choose another --out")
        return
    for path in _matches(out, patterns):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
