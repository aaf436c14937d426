"""Every plot writes a non-empty PNG and returns its path."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from longmd.analysis import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG_MAGIC


def test_all_plots_write_pngs(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    steps = np.arange(50)
    r = np.linspace(0.05, 5.95, 60)
    t = np.arange(100) * 0.5
    lag = np.arange(200) * 1.0
    msd_values = 0.06 * lag + rng.normal(0, 0.05, lag.shape)
    ref_forces = rng.normal(size=(3, 6, 3))
    written = [
        plots.plot_mepa_vs_step(
            {"DT": 0.05 + 0.001 * steps, "S=1": 0.05 * np.exp(0.05 * steps)},
            tmp_path / "sub" / "mepa.png",
            timestep_fs=0.5,
            log_y=True,
        ),
        plots.plot_mepa_vs_step({"DT": 0.05 + 0.001 * steps}, tmp_path / "mepa_steps.png"),
        plots.plot_mepa_vs_step(
            {"DT": {"mean": 0.05 + 0.001 * steps, "lo": 0.04 + 0.001 * steps, "hi": 0.07 + 0.001 * steps}},
            tmp_path / "mepa_band.png",
            per_species={"DT": {"H": {"mean": 0.02 + 0 * steps, "lo": 0.01 + 0 * steps, "hi": 0.03 + 0 * steps},
                                "C": 0.03 + 0 * steps}},
        ),
        plots.plot_parity(ref_forces + 0.1, ref_forces, tmp_path / "parity.png", numbers=[1, 1, 6, 6, 46, 46]),
        plots.plot_parity(
            rng.normal(size=10), rng.normal(size=10), tmp_path / "energy.png", quantity="energy", unit="eV/atom"
        ),
        plots.plot_rdf(
            r, {"reference": np.exp(-((r - 2.5) ** 2)), "model": np.exp(-((r - 2.6) ** 2))}, tmp_path / "rdf.png"
        ),
        plots.plot_distance_histogram(r, {"reference": np.ones_like(r) / 6}, tmp_path / "hr.png"),
        plots.plot_tracked_distances(t, {"H-H": 0.74 + 0.01 * t}, tmp_path / "dist.png", threshold=1.5),
        plots.plot_jaccard(np.arange(1, 11), {"H": 1 - 0.02 * np.arange(10)}, tmp_path / "jac.png", level=0.9),
        plots.plot_msd({"reference": (lag, msd_values, 0.1 * msd_values), "model": (lag, 1.1 * msd_values, None)},
                       tmp_path / "msd.png", start_fs=20.0),
        plots.plot_arrhenius({"reference": (np.array([800.0, 1000.0]), np.array([1e-5, 3e-5]), np.array([1e-6, 2e-6]))},
                             tmp_path / "arrhenius.png", fits={"reference": (np.array([300.0, 1000.0]),
                                                                             np.array([1e-8, 3e-5]))}),
    ]
    for path in written:
        assert isinstance(path, Path)
        assert _is_png(path), path


def test_reference_drawn_last_and_thicker() -> None:
    """RDF/h(r) figures list the reference first (report.py) but must draw it on top, black and thicker."""
    r = np.linspace(0.1, 6.0, 30)
    curves = {"reference": np.exp(-((r - 2.5) ** 2)), "model A": np.exp(-((r - 2.6) ** 2)), "model B": r * 0}
    fig = plots._curves_figure(r, curves, "g(r)", "r (Å)", "g(r)")
    lines = [line for line in fig.axes[0].get_lines() if line.get_label() in curves]
    assert [line.get_label() for line in lines] == ["model A", "model B", "reference"]
    ref, *models = lines[::-1]
    assert ref.get_color() == "black"
    assert all(ref.get_linewidth() > m.get_linewidth() for m in models)
    assert ref.get_zorder() > max(m.get_zorder() for m in models)


def test_jaccard_ticks_are_integers(tmp_path: Path, monkeypatch) -> None:
    from matplotlib.ticker import MaxNLocator

    captured = {}
    original = plots._save

    def keep(fig, path):
        captured["fig"] = fig
        return original(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    plots.plot_jaccard(np.arange(1, 4), {"H": np.array([0.9, 0.8, 0.7])}, tmp_path / "j.png", level=0.5)
    ax = captured["fig"].axes[0]
    assert isinstance(ax.xaxis.get_major_locator(), MaxNLocator)
    assert all(float(t).is_integer() for t in ax.get_xticks())
