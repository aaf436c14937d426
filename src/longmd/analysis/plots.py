"""PNG plots of the analysis metrics (matplotlib's Agg canvas; pyplot's global state is never touched).

Every function writes one PNG (parent folders created) and returns its path. Curves are given as
``{label: values}`` so several models (and the reference) share one figure.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from ase.data import chemical_symbols
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def _new_axes(title: str, xlabel: str, ylabel: str, size: tuple[float, float] = (6.0, 4.0)):
    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    return fig, ax


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    return path


REFERENCE = "reference"


def _plot_curves(ax, x: np.ndarray, curves: Mapping[str, np.ndarray], reference: str | None = REFERENCE) -> None:
    """Draw ``curves``; the one labelled ``reference`` last, black and thicker, so models never hide it."""
    order = [k for k in curves if k != reference] + [k for k in curves if k == reference]
    for label in order:
        y = np.asarray(curves[label], dtype=np.float64)
        style = {"color": "black", "linewidth": 2.4, "zorder": 5} if label == reference else {"linewidth": 1.2}
        ax.plot(np.asarray(x)[: len(y)], y, label=label, **style)


def _curves_figure(
    x: np.ndarray,
    curves: Mapping[str, np.ndarray],
    title: str,
    xlabel: str,
    ylabel: str,
    log_y: bool = False,
    hline: float | None = None,
) -> Figure:
    fig, ax = _new_axes(title, xlabel, ylabel)
    _plot_curves(ax, x, curves)
    if hline is not None:
        ax.axhline(hline, color="grey", linestyle="--", linewidth=1)
    if log_y:
        ax.set_yscale("log")
    if curves:
        ax.legend()
    return fig


def _curves(x: np.ndarray, curves: Mapping[str, np.ndarray], path: str | Path, *args, **kwargs) -> Path:
    return _save(_curves_figure(x, curves, *args, **kwargs), path)


Band = Mapping[str, np.ndarray]
"""A curve over starts: ``{"mean", "lo", "hi"}`` arrays (:func:`longmd.analysis.rollout_test.spread`)."""

SPECIES_STYLES = ("-", "--", ":", "-.")


def plot_mepa_vs_step(
    curves: Mapping[str, np.ndarray | Band],
    path: str | Path,
    timestep_fs: float | None = None,
    log_y: bool = False,
    per_species: Mapping[str, Mapping[str, np.ndarray | Band]] | None = None,
    band_label: str = "16-84 % of starts",
) -> Path:
    """MEPA per rollout step for several models (paper Fig. 4); x in fs when ``timestep_fs`` is given.

    A curve is an array or a :data:`Band` (its mean drawn, lo..hi shaded). ``per_species`` ({model: {species:
    curve}}) adds a second panel of per-species force MAEs, one colour per model and one line style per species.
    """
    def mean(c) -> np.ndarray:
        return np.asarray(c["mean"] if isinstance(c, Mapping) else c, dtype=np.float64)

    n = max((len(mean(v)) for v in curves.values()), default=0)
    x = np.arange(n) * (timestep_fs if timestep_fs else 1.0)
    xlabel = "time (fs)" if timestep_fs else "step"
    panels = 2 if per_species else 1
    fig = Figure(figsize=(6.0, 4.0 * panels))
    FigureCanvasAgg(fig)
    axes = fig.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]

    def draw(ax, c, color, label, style="-") -> None:
        y = mean(c)
        line = ax.plot(x[: len(y)], y, style, color=color, label=label, linewidth=1.4)[0]
        if isinstance(c, Mapping) and "lo" in c:
            ax.fill_between(x[: len(y)], np.asarray(c["lo"]), np.asarray(c["hi"]), color=line.get_color(),
                            alpha=0.2, linewidth=0)

    colors = {label: f"C{k}" for k, label in enumerate(curves)}
    banded = any(isinstance(c, Mapping) for c in curves.values())
    for label, c in curves.items():
        draw(axes[0], c, colors[label], label)
    axes[0].set(title="MEPA along rollouts" + (f" (mean over starts, band {band_label})" if banded else ""),
                ylabel="MEPA (eV/Å)")
    if per_species:
        for label, by_species in per_species.items():
            for k, (sp, c) in enumerate(by_species.items()):
                draw(axes[1], c, colors.get(label), f"{label} {sp}", SPECIES_STYLES[k % len(SPECIES_STYLES)])
        axes[1].set(title="per species", ylabel="force MAE (eV/Å)")
    for ax in axes:
        if log_y:
            ax.set_yscale("log")
        if ax.lines:
            ax.legend(fontsize=7)
    axes[-1].set_xlabel(xlabel)
    return _save(fig, path)


def plot_parity(
    pred: np.ndarray,
    ref: np.ndarray,
    path: str | Path,
    numbers: np.ndarray | None = None,
    quantity: str = "force",
    unit: str = "eV/Å",
    model: str | None = None,
) -> Path:
    """Predicted against reference values (forces: every component, coloured by species if ``numbers``);
    ``model`` names the model in the title."""
    p, r = np.asarray(pred, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    name = f"{model}: " if model else ""
    fig, ax = _new_axes(
        f"{name}{quantity} parity (MAE {np.mean(np.abs(p - r)):.3g} {unit})",
        f"reference {quantity} ({unit})",
        f"predicted {quantity} ({unit})",
        (5.0, 5.0),
    )
    if numbers is not None and p.ndim >= 2 and p.shape[-1] == 3:
        z = np.broadcast_to(np.asarray(numbers)[:, None], p.shape[-2:])
        z = np.broadcast_to(z, p.shape)
        kinds, counts = np.unique(np.asarray(numbers), return_counts=True)
        for species in kinds[np.argsort(-counts, kind="stable")].tolist():  # rare species drawn on top
            mask = z == species
            ax.scatter(r[mask], p[mask], s=4, alpha=0.5, label=chemical_symbols[species])
        ax.legend(markerscale=3)
    else:
        ax.scatter(r.ravel(), p.ravel(), s=4, alpha=0.5)
    finite = np.concatenate([p[np.isfinite(p)], r[np.isfinite(r)]])
    if finite.size:
        lo, hi = float(finite.min()), float(finite.max())
        ax.plot([lo, hi], [lo, hi], color="black", linewidth=1)
    return _save(fig, path)


def plot_rdf(
    r: np.ndarray, curves: Mapping[str, np.ndarray], path: str | Path, title: str = "radial distribution",
    pair_density: bool = False,
) -> Path:
    """g(r) of several models and the reference (``pair_density``: the n(r) of non-bulk frames, 1/Å³)."""
    if pair_density:
        return _curves(r, curves, path, title, "r (Å)", "n(r) (1/Å³)")
    return _curves(r, curves, path, title, "r (Å)", "g(r)", hline=1.0)


def plot_distance_histogram(
    r: np.ndarray, curves: Mapping[str, np.ndarray], path: str | Path, title: str = "interatomic distances"
) -> Path:
    """h(r) of several models and the reference (paper Figs. 10-11)."""
    return _curves(r, curves, path, title, "r (Å)", "h(r) (1/Å)")


def plot_tracked_distances(
    times_fs: np.ndarray, curves: Mapping[str, np.ndarray], path: str | Path, threshold: float | None = None
) -> Path:
    """Distances of tracked atom pairs over time; ``threshold`` drawn as a dashed line."""
    return _curves(times_fs, curves, path, "tracked distances", "time (fs)", "distance (Å)", hline=threshold)


def plot_jaccard(
    ks: np.ndarray, curves: Mapping[str, np.ndarray], path: str | Path, level: float | None = None
) -> Path:
    """Jaccard similarity of neighbour sets against the offset k (e.g. one curve per species); integer k ticks."""
    fig, ax = _new_axes("neighbourhood similarity", "offset k (frames)", "Jaccard similarity")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for label, y in curves.items():
        ax.plot(np.asarray(ks)[: len(y)], y, marker="o", markersize=3, label=label)
    if level is not None:
        ax.axhline(level, color="grey", linestyle="--", linewidth=1)
    if curves:
        ax.legend()
    return _save(fig, path)


def plot_msd(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]],
    path: str | Path,
    start_fs: float | None = None,
    title: str = "mean squared displacement",
) -> Path:
    """MSD against lag time, ``{label: (lag_fs, msd_A2, std_A2 or None)}``, the std as a band; the reference
    drawn last, black; ``start_fs`` marks where the diffusion fit begins."""
    fig, ax = _new_axes(title, "lag time (fs)", "MSD (Å²)")
    order = [k for k in curves if k != REFERENCE] + [k for k in curves if k == REFERENCE]
    for label in order:
        lag, values, std = (np.asarray(v, dtype=np.float64) if v is not None else None for v in curves[label])
        style = {"color": "black", "linewidth": 2.4, "zorder": 5} if label == REFERENCE else {"linewidth": 1.2}
        (line,) = ax.plot(lag, values, label=label, **style)
        if std is not None:
            ax.fill_between(lag, values - std, values + std, color=line.get_color(), alpha=0.2, linewidth=0)
    if start_fs is not None:
        ax.axvline(start_fs, color="grey", linestyle=":", linewidth=1.0, label="fit start")
    ax.legend()
    return _save(fig, path)


def plot_arrhenius(
    series: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    path: str | Path,
    fits: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    quantity: str = "D (cm²/s)",
) -> Path:
    """log10 of a rate against 1000/T: ``{label: (T_K, mean, std)}`` as error bars; ``fits`` ``{label: (T_K,
    values)}`` as lines (e.g. an Arrhenius fit out to 300 K)."""
    fig, ax = _new_axes("Arrhenius plot", "1000 / T (1/K)", f"log10 {quantity}")
    for label, (t, mean, std) in series.items():
        t, mean, std = (np.asarray(v, dtype=np.float64) for v in (t, mean, std))
        ok = mean > 0
        lo = np.log10(mean[ok]) - np.log10(np.clip(mean[ok] - std[ok], 1e-300, None))
        hi = np.log10(mean[ok] + std[ok]) - np.log10(mean[ok])
        style = {"color": "black", "zorder": 5} if label == REFERENCE else {}
        ax.errorbar(1000.0 / t[ok], np.log10(mean[ok]), yerr=[lo, hi], fmt="o", capsize=3, label=label, **style)
    for label, (t, values) in (fits or {}).items():
        t, values = np.asarray(t, dtype=np.float64), np.asarray(values, dtype=np.float64)
        style = {"color": "black"} if label == REFERENCE else {}
        ax.plot(1000.0 / t, np.log10(values), "--", linewidth=1.0, label=f"{label} fit", **style)
    ax.legend()
    return _save(fig, path)
