"""The files of a ``simulate`` run: thermo CSV, per-replica trajectories, stopped frames and the thermo plot.

A checkpoint records how far every file had been written (:meth:`Outputs.marks`); a resumed run first cuts the
files back to those marks, so frames and rows written after the checkpoint by the killed run are not doubled.
"""

from __future__ import annotations

import csv
import os
from contextlib import ExitStack
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms

from longmd.dynamics.state import MDState

THERMO_COLUMNS = ("step", "time_fs", "replica", "E_pot_eV", "E_kin_eV", "E_tot_eV", "T_K")


class ThermoHistory:
    """Thermo values of every replica, thinned (every other point dropped) past ``max_points`` for plotting."""

    def __init__(self, n_replicas: int, max_points: int = 4000) -> None:
        self.n, self.max_points = n_replicas, max_points
        self.time: list[float] = []
        self.values: list[np.ndarray] = []  # (4, n_replicas): E_pot, E_kin, E_tot, T
        self.stride, self._seen = 1, 0

    def add(self, time_fs: float, replicas: list[int], values: np.ndarray) -> None:
        self._seen += 1
        if (self._seen - 1) % self.stride:
            return
        row = np.full((4, self.n), np.nan)
        row[:, replicas] = values
        self.time.append(time_fs)
        self.values.append(row)
        if len(self.time) > self.max_points:
            self.time, self.values, self.stride = self.time[::2], self.values[::2], 2 * self.stride

    def state_dict(self) -> dict:
        return {"time": list(self.time), "values": [v.tolist() for v in self.values], "stride": self.stride,
                "seen": self._seen}

    def load_state_dict(self, saved: dict) -> None:
        self.time, self.values = list(saved["time"]), [np.asarray(v) for v in saved["values"]]
        self.stride, self._seen = int(saved["stride"]), int(saved["seen"])

    def plot(self, path: Path, title: str = "MD", max_lines: int = 16) -> None:
        """E_pot, E_kin, E_tot - E_tot(0) (meV, each replica from its own start, so drift shows whatever the
        replicas' absolute energies) and T against time, one line per replica (the first ``max_lines``)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        t = np.asarray(self.time)
        v = np.stack(self.values) if self.values else np.zeros((0, 4, self.n))
        if len(v):
            first = np.array([col[np.isfinite(col)][0] if np.isfinite(col).any() else np.nan for col in v[:, 2].T])
            v = v.copy()
            v[:, 2] = 1000.0 * (v[:, 2] - first[None, :])
        fig = Figure(figsize=(7, 9))
        FigureCanvasAgg(fig)
        labels = ("E_pot (eV)", "E_kin (eV)", "E_tot - E_tot(0) (meV)", "T (K)")
        axes = fig.subplots(4, 1, sharex=True)
        for k, ax in enumerate(axes):
            for r in range(min(self.n, max_lines)):
                ax.plot(t, v[:, k, r], lw=0.8, label=f"replica {r}" if k == 0 and self.n <= 8 else None)
            ax.set_ylabel(labels[k])
        axes[-1].set_xlabel("time (fs)")
        if self.n <= 8:
            axes[0].legend(fontsize=7)
        shown = f"first {max_lines} of {self.n} replicas" if self.n > max_lines else f"{self.n} replica(s)"
        axes[0].set_title(f"{title}: {shown}")
        fig.tight_layout()
        fig.savefig(path, dpi=110)


def _traj_frames(path: Path) -> int:
    """Frames in an ASE .traj file (0 for a missing or empty one: ASE writes nothing before the first frame)."""
    if not path.is_file() or path.stat().st_size == 0:
        return 0
    with ase.io.Trajectory(path) as traj:
        return len(traj)


def _trim_traj(path: Path, frames: int) -> None:
    """Keep the first ``frames`` frames of an ASE .traj file (rewritten, then moved in place, if it has more)."""
    if _traj_frames(path) <= frames:
        return
    if frames == 0:
        os.truncate(path, 0)
        return
    with ase.io.Trajectory(path) as traj:
        kept = [traj[k] for k in range(frames)]
    tmp = path.with_name(f".{path.name}.tmp")
    with ase.io.Trajectory(tmp, "w") as out:
        for atoms in kept:
            out.write(atoms)
    os.replace(tmp, path)


def _check_marks(out_dir: Path, marks: dict) -> None:
    """Refuse files shorter than a checkpoint's marks: they are not the files that checkpoint was written with."""
    for name, size in marks["bytes"].items():
        path = out_dir / name
        actual = path.stat().st_size if path.is_file() else 0
        if actual < size:
            raise ValueError(f"resume: {path} holds {actual} bytes, fewer than the {size} of its checkpoint "
                             "(files of another run?); use a new --out")
    for r, frames in enumerate(marks["traj_frames"]):
        path = out_dir / f"traj_{r:03d}.traj"
        if _traj_frames(path) < frames:
            raise ValueError(f"resume: {path} holds fewer frames than the {frames} of its checkpoint "
                             "(files of another run?); use a new --out")


class Outputs:
    """The files of a run in ``out_dir`` (nothing when None): thermo CSV, per-replica extxyz/.traj, stops.

    ``resume_from`` (the :meth:`marks` of a checkpoint) reopens the files of an interrupted run, cut back to
    those marks, and appends to them.
    """

    def __init__(self, out_dir: str | Path | None, n_replicas: int, resume_from: dict | None = None,
                 columns: tuple[str, ...] = ()) -> None:
        self.dir = None if out_dir is None else Path(out_dir)
        self.columns = tuple(columns)  # thermo columns after THERMO_COLUMNS (species temperatures, filters)
        self.files: dict[str, str] = {}
        self._stack = ExitStack()
        self._csv_file = None
        self._csv = None
        self._xyz: list = []
        self._traj: list = []
        self._traj_frames = [0] * n_replicas
        if self.dir is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        xyz_names = [f"traj_{r:03d}.extxyz" for r in range(n_replicas)]
        traj_names = [f"traj_{r:03d}.traj" for r in range(n_replicas)]
        mode = "w"
        if resume_from is not None:
            mode = "a"
            _check_marks(self.dir, resume_from)
            for name, size in resume_from["bytes"].items():
                os.truncate(self.path(name), size)
            self._traj_frames = list(resume_from["traj_frames"])
            for name, frames in zip(traj_names, self._traj_frames, strict=True):
                _trim_traj(self.path(name), frames)
        enter = self._stack.enter_context
        self._csv_file = enter(self.path("thermo.csv").open(mode, newline=""))
        self._csv = csv.writer(self._csv_file)
        if resume_from is None:
            self._csv.writerow((*THERMO_COLUMNS, *self.columns))
        self._xyz = [enter(self.path(name).open(mode)) for name in xyz_names]
        self._traj = [enter(ase.io.Trajectory(self.path(name), mode)) for name in traj_names]

    def path(self, name: str) -> Path:
        """Path of a file of the run (recorded in ``files``)."""
        self.files[name] = str(self.dir / name)
        return self.dir / name

    def __enter__(self) -> Outputs:
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def marks(self) -> dict:
        """Flush every file; how far each has been written (bytes of the text files, frames of the .traj)."""
        text = [self._csv_file, *self._xyz]
        for f in text:
            f.flush()
            os.fsync(f.fileno())
        return {"bytes": {Path(f.name).name: f.tell() for f in text}, "traj_frames": list(self._traj_frames)}

    def thermo(self, step: int, time_fs: float, replicas: list[int], stats: np.ndarray,
               extra: np.ndarray | None = None) -> None:
        """One CSV row per replica from the stats of ``check_replicas`` and ``extra`` (len(columns), B)."""
        if self._csv is None:
            return
        e_pot, e_kin, temperature = stats[2:5]
        extra = np.zeros((0, len(replicas))) if extra is None else extra
        self._csv.writerows(
            [step, f"{time_fs:.6g}", r, f"{e_pot[b]:.10g}", f"{e_kin[b]:.10g}", f"{e_pot[b] + e_kin[b]:.10g}",
             f"{temperature[b]:.10g}", *(f"{v:.8g}" for v in extra[:, b])]
            for b, r in enumerate(replicas)
        )

    def frames(self, step: int, time_fs: float, replicas: list[int], state: MDState) -> None:
        """Append the frame of every replica to its extxyz and .traj files."""
        if self.dir is None:
            return
        for r, atoms in zip(replicas, state.to_atoms(), strict=True):
            atoms.info.update(step=step, time_fs=time_fs, replica=r)
            ase.io.write(self._xyz[r], atoms, format="extxyz")
            self._traj[r].write(atoms)
            self._traj_frames[r] += 1

    def stopped(self, replica: int, frame: Atoms) -> str | None:
        """Write the kept frame of a stopped replica; its path."""
        if self.dir is None:
            return None
        path = self.path(f"stopped_{replica:03d}.extxyz")
        ase.io.write(path, frame, format="extxyz")
        return str(path)
