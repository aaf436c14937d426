"""Where a command runs: the device it may use and how many torch CPU threads it takes.

One helper each, used by every command (``train``, ``simulate``, ``evaluate``, ``demo``).
"""

from __future__ import annotations

import os

import torch

ATOMS_PER_THREAD = 500  # below this many atoms per thread, intra-op threads cost more than they save


def check_device(name: str | None, where: str = "--device") -> None:
    """A ``ValueError`` naming ``where`` when ``name`` is a CUDA device that is not there (``auto``, ``cpu``
    and None pass)."""
    if not name or not name.startswith("cuda"):
        return
    index = int(name.partition(":")[2] or 0)
    if not torch.cuda.is_available():
        raise ValueError(f"{where} {name}: no CUDA device is available (torch {torch.__version__})")
    if index >= torch.cuda.device_count():
        raise ValueError(f"{where} {name}: only {torch.cuda.device_count()} CUDA device(s) available")


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _idle_cpus(cpus: int) -> int:
    """CPUs not taken by other work: ``cpus`` less the 1-minute load average (at least 1)."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # pragma: no cover - not Unix
        return cpus
    return max(1, min(cpus, int(cpus - load + 0.5)))


def choose_threads(requested: int | None = None, n_atoms: int | None = None) -> tuple[int, str]:
    """The torch CPU thread count to use and why: ``requested`` when given, else the idle CPUs capped at one
    thread per :data:`ATOMS_PER_THREAD` atoms (a 57-atom system: 1 thread; unknown size: at most 4)."""
    if requested is not None:
        if requested < 1:
            raise ValueError(f"--threads: must be >= 1, got {requested}")
        return requested, "as requested"
    cpus = _available_cpus()
    idle = _idle_cpus(cpus)
    by_size = 4 if n_atoms is None else max(1, n_atoms // ATOMS_PER_THREAD)
    size = "size unknown" if n_atoms is None else f"{n_atoms} atoms"
    return min(idle, by_size), f"auto: {idle} of {cpus} CPUs idle, {size} (set --threads to change)"


def set_threads(requested: int | None = None, n_atoms: int | None = None, log=print) -> int:
    """Set torch's CPU threads by :func:`choose_threads` and log the choice; returns the count."""
    threads, why = choose_threads(requested, n_atoms)
    torch.set_num_threads(threads)
    log(f"torch CPU threads: {threads} ({why})")
    return threads
