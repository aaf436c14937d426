"""Per-epoch logs people can read: JSON lines + CSV, a learning-curve plot and a summary table."""

from __future__ import annotations

import csv
import json
import math
import resource
import sys
from pathlib import Path

import torch

from longmd.atomic import atomic_write_text

COLUMNS = ("epoch", "S", "lr", "train_loss", "val_mepa", "epoch_time_s", "peak_memory_MB", "improved")


def trained_minutes(records) -> float:
    """Minutes the epochs of ``records`` took (what ``training.max_minutes`` bounds)."""
    return sum(r["epoch_time_s"] for r in records) / 60


class RunLog:
    """Append-only epoch records in ``metrics.jsonl`` and ``metrics.csv`` of a run directory."""

    def __init__(self, out: Path, keep: int | None = None, write: bool = True) -> None:
        self.write = write  # False: keep records in memory only (ranks other than 0 of a distributed run)
        self.jsonl = out / "metrics.jsonl"
        self.csv = out / "metrics.csv"
        self.records: list[dict] = []
        if self.jsonl.exists():
            lines = [json.loads(line) for line in self.jsonl.read_text().splitlines() if line.strip()]
            # On resume, epochs logged after the checkpoint are redone: drop them.
            self.records = lines if keep is None else lines[:keep]
        if write:
            self._rewrite()

    def _rewrite(self) -> None:
        atomic_write_text(self.jsonl, "".join(json.dumps(r) + "\n" for r in self.records))
        self._write_csv()

    def append(self, record: dict) -> None:
        self.records.append(record)
        if not self.write:
            return
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(record) + "\n")
        self._write_csv()

    def _write_csv(self) -> None:
        species_keys = sorted({k for r in self.records for k in r if k.startswith("val_mepa_Z")})
        with open(self.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=[*COLUMNS, *species_keys], extrasaction="ignore")
            writer.writeheader()
            writer.writerows(self.records)


def _first_step_weight(run_dir: Path) -> float:
    """``training.first_step_weight`` of the run in ``run_dir`` (its config.yaml), else the default."""
    from longmd.config import TrainingConfig, load_config

    try:
        return float(load_config(run_dir / "config.yaml").training.first_step_weight)
    except Exception:  # no or foreign config.yaml: the default
        return float(TrainingConfig().first_step_weight)


def per_frame_loss(train_loss: float, s: int, first_step_weight: float) -> float:
    """The training loss per weighted frame: at S > 1 the loss sums ``first_step_weight`` x step 0 and the S - 1
    other steps, so it is divided by (first_step_weight + S - 1); at S = 1 it is one frame already."""
    return train_loss if s <= 1 else train_loss / (first_step_weight + s - 1)


def plot_learning_curve(records: list[dict], path: Path, first_step_weight: float | None = None) -> Path:
    """Validation MEPA and per-frame training loss vs epoch, with marks where S increases (the paper's
    Figure 2). ``first_step_weight``: default the run's (``config.yaml`` beside ``path``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    w = _first_step_weight(path.parent) if first_step_weight is None else first_step_weight
    fig, (ax_val, ax_train) = plt.subplots(2, 1, figsize=(7, 6.4), sharex=True)
    epochs = [r["epoch"] for r in records]
    val = [r["val_mepa"] if math.isfinite(r["val_mepa"]) else float("nan") for r in records]
    ax_val.plot(epochs, val, "o-", ms=3, label="validation MEPA")
    ax_train.plot(epochs, [per_frame_loss(r["train_loss"], r["S"], w) for r in records], "o-", ms=3, color="C1",
                  label="training loss per frame")
    for prev, rec in zip(records, records[1:]):
        if rec["S"] != prev["S"]:
            for ax in (ax_val, ax_train):
                ax.axvline(rec["epoch"] - 0.5, color="grey", ls="--", lw=0.8)
            ax_val.annotate(f"S={rec['S']}", (rec["epoch"] - 0.5, 1.01), xycoords=("data", "axes fraction"),
                            fontsize=8, ha="center", va="bottom", annotation_clip=False)
    ax_val.set_title("learning curve", pad=16)
    ax_val.set_ylabel("validation rollout MEPA (eV/Å)")
    ax_train.set_ylabel(f"training loss / (w + S - 1)\n(S > 1: step 0 weighs w = {w:g})")
    ax_train.set_xlabel("epoch")
    for ax in (ax_val, ax_train):
        ax.set_yscale("log")
        ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def read_records(run_dir: Path) -> list[dict]:
    """The epoch records of a run directory's ``metrics.jsonl`` (empty when there is none)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def best_per_s(records: list[dict]) -> list[dict]:
    """Per S (ascending), the epoch record with the lowest validation MEPA, the model ``best_S{S}.pt`` holds,
    with ``epochs`` (epochs trained at that S) added; non-finite MEPAs (a rollout blew up) rank last."""
    out = []
    for s in sorted({r["S"] for r in records}):
        at_s = [r for r in records if r["S"] == s]
        best = min(at_s, key=lambda r: r["val_mepa"] if math.isfinite(r["val_mepa"]) else math.inf)
        out.append({**best, "epochs": len(at_s)})
    return out


def summary_table(records: list[dict], metric: str = "validation MEPA (eV/Å)") -> str:
    """A markdown table: the best validation ``metric`` and the epochs of every S."""
    rows = [f"| S | epochs | best {metric} | at epoch |", "|---|---|---|---|"]
    rows += [f"| {b['S']} | {b['epochs']} | {b['val_mepa']:.4f} | {b['epoch']} |" for b in best_per_s(records)]
    return "\n".join(rows)


def plot_best_per_s(records: list[dict], path: Path) -> Path:
    """Validation MEPA of the best model of each S, total and per species (the DT paper's Figure 3)."""
    from ase.data import chemical_symbols
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    best = best_per_s(records)
    s_values = [b["S"] for b in best]

    def finite(values: list[float]) -> list[float]:
        return [v if v is not None and math.isfinite(v) else float("nan") for v in values]

    fig = Figure(figsize=(5.5, 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(s_values, finite([b["val_mepa"] for b in best]), "o-", color="black", lw=2, label="MEPA")
    for key in sorted({k for b in best for k in b if k.startswith("val_mepa_Z")}, key=lambda k: int(k[10:])):
        ax.plot(s_values, finite([b.get(key) for b in best]), "s--", ms=4, lw=1,
                label=chemical_symbols[int(key[10:])])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(title="best model of each S", xlabel="S (rollout steps in training)",
           ylabel="validation rollout MEPA (eV/Å)", yscale="log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process (CUDA: allocated on ``device``), MB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20
