"""Transport: MSD, diffusion coefficient, Nernst-Einstein conductivity, Arrhenius fits.

A short numpy implementation (see ``docs/analysis.md`` for why no library): MSD with all time origins
via FFT, least-squares line fits, and the textbook formulas. Units: Å, fs, K, eV; D is reported in
Å^2/fs and cm^2/s (1 Å^2/fs = 0.1 cm^2/s), conductivity in S/cm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import units

from longmd.analysis._frames import as_frames
from longmd.units import KB_EV_PER_K

A2_PER_FS_TO_CM2_PER_S = 0.1  # 1e-16 cm^2 / 1e-15 s


def _line_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Ordinary least squares y = a x + b: (a, b, standard error of a; NaN for 2 points)."""
    a, b = np.polyfit(x, y, 1)
    dof = len(x) - 2
    if dof < 1:
        return float(a), float(b), float("nan")
    resid = y - (a * x + b)
    sxx = float(np.sum((x - x.mean()) ** 2))
    return float(a), float(b), float(np.sqrt(np.sum(resid**2) / dof / sxx))


def msd(
    positions: np.ndarray,
    frame_interval_fs: float,
    atoms: np.ndarray | None = None,
    average_origins: bool = True,
    max_lag: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean squared displacement (Å^2) of the selected atoms versus lag time (fs).

    Args:
        positions: (T, N, 3) *unwrapped* positions, Å (see :func:`longmd.data.trajectory.unwrap_positions`).
        frame_interval_fs: time between frames.
        atoms: indices or boolean mask of the atoms to average over (e.g. ``numbers == 3``); default all.
        average_origins: average over every time origin t (exact, O(T log T) via FFT); else only t = 0.
        max_lag: largest lag in frames (default T - 1).

    Returns:
        (lag times (L,) fs, MSD (L,) Å^2), L = max_lag + 1, starting at lag 0.
    """
    pos = as_frames(positions)
    if atoms is not None:
        pos = pos[:, np.asarray(atoms)]
    n_frames = pos.shape[0]
    n_lags = n_frames if max_lag is None else min(int(max_lag) + 1, n_frames)
    x = pos - pos[:1]
    if not average_origins:
        values = np.mean(np.sum((x[:n_lags] - x[:1]) ** 2, axis=-1), axis=1)
        return np.arange(n_lags) * float(frame_interval_fs), values
    sq = np.sum(x**2, axis=-1)  # (T, N)
    csum = np.concatenate([np.zeros((1, sq.shape[1])), np.cumsum(sq, axis=0)])  # C(k) = sum_{t<k}
    m = np.arange(n_lags)
    remaining = (n_frames - m)[:, None]
    s1 = (csum[-1] - csum[m] + csum[n_frames - m]) / remaining
    spectrum = np.fft.rfft(x, n=2 * n_frames, axis=0)
    autocorr = np.fft.irfft(np.abs(spectrum) ** 2, n=2 * n_frames, axis=0)[:n_lags].sum(-1)
    values = np.mean(s1 - 2.0 * autocorr / remaining, axis=1)
    return m * float(frame_interval_fs), values


@dataclass(frozen=True)
class DiffusionFit:
    """Line MSD = slope * t + intercept over [t_min_fs, t_max_fs]; D = slope / (2 * dim)."""

    diffusion_A2_per_fs: float
    diffusion_cm2_per_s: float
    slope_A2_per_fs: float
    intercept_A2: float
    t_min_fs: float
    t_max_fs: float
    ols_stderr_cm2_per_s: float

    def line(self, t_fs: np.ndarray) -> np.ndarray:
        """The fitted MSD (Å^2) at times ``t_fs``."""
        return self.slope_A2_per_fs * np.asarray(t_fs) + self.intercept_A2


def fit_diffusion(
    lag_fs: np.ndarray,
    msd_A2: np.ndarray,
    t_min_fs: float | None = None,
    t_max_fs: float | None = None,
    dim: int = 3,
) -> DiffusionFit:
    """Diffusion coefficient from a least-squares line through the MSD between t_min and t_max.

    Defaults skip the ballistic start and the noisy long lags: 10 % to 50 % of the longest lag.
    ``ols_stderr`` is the ordinary least-squares standard error; MSD points are correlated, so it is a
    lower bound on the true uncertainty.
    """
    t, y = np.asarray(lag_fs, dtype=np.float64), np.asarray(msd_A2, dtype=np.float64)
    lo = 0.1 * t[-1] if t_min_fs is None else float(t_min_fs)
    hi = 0.5 * t[-1] if t_max_fs is None else float(t_max_fs)
    sel = (t >= lo) & (t <= hi)
    if sel.sum() < 3:
        raise ValueError(f"fit window [{lo}, {hi}] fs holds {sel.sum()} MSD points; need at least 3")
    slope, intercept, err = _line_fit(t[sel], y[sel])
    d = slope / (2.0 * dim)
    stderr = err / (2.0 * dim) * A2_PER_FS_TO_CM2_PER_S
    return DiffusionFit(d, d * A2_PER_FS_TO_CM2_PER_S, slope, intercept, lo, hi, stderr)


def nernst_einstein_conductivity(
    diffusion_cm2_per_s: float,
    n_carriers: int,
    volume_A3: float,
    temperature_K: float,
    charge: float = 1.0,
    haven_ratio: float = 1.0,
) -> float:
    """Ionic conductivity sigma = n (z e)^2 D / (k_B T H_R) in S/cm, n = n_carriers / volume."""
    n_per_cm3 = n_carriers / (volume_A3 * 1e-24)
    q = charge * units._e
    return n_per_cm3 * q**2 * diffusion_cm2_per_s / (units._k * temperature_K * haven_ratio)


@dataclass(frozen=True)
class ArrheniusFit:
    """ln(y) = ln_prefactor - Ea / (k_B T), y = value (or value * T when ``times_temperature``)."""

    activation_energy_eV: float
    ln_prefactor: float
    times_temperature: bool
    stderr_eV: float

    def predict(self, temperature_K: float | np.ndarray) -> float | np.ndarray:
        """The fitted value (D, or sigma when fitted as sigma*T) at ``temperature_K``."""
        t = np.asarray(temperature_K, dtype=np.float64)
        y = np.exp(self.ln_prefactor - self.activation_energy_eV / (KB_EV_PER_K * t))
        out = y / t if self.times_temperature else y
        return float(out) if out.ndim == 0 else out


def arrhenius_fit(temperatures_K: np.ndarray, values: np.ndarray, times_temperature: bool = False) -> ArrheniusFit:
    """Fit ln(value) (D) or ln(value * T) (conductivity: ``times_temperature=True``) linearly in 1/T.

    The activation energy is Ea = -slope * k_B (eV); extrapolate with ``fit.predict(300.0)``.
    """
    t = np.asarray(temperatures_K, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if len(t) < 2 or t.shape != v.shape or np.any(v <= 0) or np.any(t <= 0):
        raise ValueError("need >= 2 matching positive temperatures and values")
    y = np.log(v * t if times_temperature else v)
    slope, intercept, err = _line_fit(1.0 / t, y)
    return ArrheniusFit(-slope * KB_EV_PER_K, intercept, times_temperature, err * KB_EV_PER_K)
