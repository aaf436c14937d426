"""Transport: tracer diffusivity with its uncertainty, Nernst-Einstein conductivity and Arrhenius extrapolation.

Diffusion and Arrhenius fits come from kinisi (optional extra ``transport``, see ``docs/analysis.md``): its
``DiffusionAnalyzer`` estimates D from the MSD with the MSD's own covariance (Bayesian regression, McCluskey et al.,
J. Chem. Theory Comput. 2024), corrects the framework's drift and pools independent runs; its ``Arrhenius`` fits
D(T) by maximum likelihood and samples the posterior, and ``extrapolate`` carries those samples to 300 K. What is
left here: the FFT MSD (used where no fit is needed: stride checks, framework melting) and the textbook
Nernst-Einstein formula. Units: Å, fs, K, eV; D in cm^2/s (1 Å^2/fs = 0.1 cm^2/s), conductivity in S/cm.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms, units

from longmd.analysis._frames import as_frames

A2_PER_FS_TO_CM2_PER_S = 0.1  # 1e-16 cm^2 / 1e-15 s
KINISI_NEEDS = "transport fits need kinisi: pip install 'longmd[transport]'"


def _kinisi():
    try:
        import kinisi.analyze
        import kinisi.arrhenius
        import scipp
    except ImportError as exc:
        raise ImportError(KINISI_NEEDS) from exc
    return kinisi, scipp


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


def nernst_einstein_conductivity(
    diffusion_cm2_per_s: float | np.ndarray,
    n_carriers: int,
    volume_A3: float,
    temperature_K: float,
    charge: float = 1.0,
    haven_ratio: float = 1.0,
) -> float | np.ndarray:
    """Ionic conductivity sigma = n (z e)^2 D / (k_B T H_R) in S/cm, n = n_carriers / volume (D may be samples)."""
    n_per_cm3 = n_carriers / (volume_A3 * 1e-24)
    q = charge * units._e
    return n_per_cm3 * q**2 * np.asarray(diffusion_cm2_per_s) / (units._k * temperature_K * haven_ratio)


def _summary(samples: np.ndarray) -> dict[str, float]:
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return {"mean": float(np.mean(samples)), "std": float(np.std(samples)), "ci95": [float(lo), float(hi)]}


@dataclass(frozen=True)
class Diffusivity:
    """Tracer diffusivity of one species at one temperature, from kinisi (posterior samples, cm^2/s), and the MSD it
    was fitted to (Å^2, with its standard deviation) over ``lag_fs``; the fit uses lags from ``start_fs`` on."""

    species: str
    temperature_K: float
    samples_cm2_per_s: np.ndarray
    lag_fs: np.ndarray
    msd_A2: np.ndarray
    msd_std_A2: np.ndarray
    start_fs: float
    n_runs: int
    n_carriers: int
    volume_A3: float

    @property
    def mean_cm2_per_s(self) -> float:
        return float(np.mean(self.samples_cm2_per_s))

    @property
    def std_cm2_per_s(self) -> float:
        return float(np.std(self.samples_cm2_per_s))

    def conductivity_samples(self, charge: float = 1.0) -> np.ndarray:
        """Nernst-Einstein conductivity samples, S/cm."""
        return np.asarray(nernst_einstein_conductivity(self.samples_cm2_per_s, self.n_carriers, self.volume_A3,
                                                       self.temperature_K, charge))

    def summary(self, charge: float = 1.0) -> dict:
        """D and sigma (mean, std, 95 % credible interval) and -log10 sigma, for metrics.json."""
        sigma = self.conductivity_samples(charge)
        return {"species": self.species, "temperature_K": self.temperature_K, "runs": self.n_runs,
                "D_cm2_per_s": _summary(self.samples_cm2_per_s), "sigma_S_per_cm": _summary(sigma),
                "minus_log10_sigma": _summary(-np.log10(np.clip(sigma, 1e-300, None))),
                "fit_start_fs": self.start_fs, "lag_fs": self.lag_fs.tolist(), "msd_A2": self.msd_A2.tolist(),
                "msd_std_A2": self.msd_std_A2.tolist()}


def diffusivity(
    runs: Sequence[np.ndarray],
    numbers: np.ndarray,
    cell: np.ndarray,
    frame_interval_fs: float,
    temperature_K: float,
    species: int = 3,
    start_fs: float | None = None,
    n_lags: int = 40,
    max_lag_fraction: float = 0.5,
    n_samples: int = 500,
    seed: int = 0,
) -> Diffusivity:
    """kinisi's tracer D of ``species`` (atomic number) pooled over independent runs at one temperature.

    Args:
        runs: positions (T, N, 3), Å, one array per run (wrapped or not; kinisi unwraps frame to frame), cut to
            the shortest run's length.
        numbers, cell: (N,) atomic numbers and the (3, 3) periodic cell, Å.
        frame_interval_fs: time between stored frames.
        start_fs: where the diffusive regime begins (default 20 % of the longest lag used).
        n_lags: MSD lags, evenly spaced multiples of the frame interval up to ``max_lag_fraction`` of the run.
        n_samples, seed: MCMC samples per walker (kinisi: 32 walkers, thinned by 10) and the sampler's seed.
    """
    kinisi, sc = _kinisi()
    numbers = np.asarray(numbers)
    length = min(len(r) for r in runs)
    max_lag = max(2, int(max_lag_fraction * (length - 1)))
    lags = np.unique(np.linspace(1, max_lag, min(n_lags, max_lag)).round().astype(int))
    if len(lags) < 3:
        raise ValueError(f"runs of {length} frames are too short for an MSD fit (need >= 7)")
    start = float(0.2 * lags[-1] * frame_interval_fs) if start_fs is None else float(start_fs)
    symbol = Atoms(numbers=[species]).get_chemical_symbols()[0]
    if not np.any(numbers == species):
        raise ValueError(f"species {symbol} (Z={species}) is not in the structure")
    trajectories = [[Atoms(numbers=numbers, positions=p, cell=cell, pbc=True) for p in np.asarray(r)[:length]]
                    for r in runs]
    kwargs = {"specie": symbol, "time_step": sc.scalar(float(frame_interval_fs), unit="fs"),
              "step_skip": sc.scalar(1), "dt": sc.array(dims=["time interval"], values=lags * frame_interval_fs,
                                                        unit="fs"), "progress": False}
    if len(trajectories) == 1:
        analyzer = kinisi.analyze.DiffusionAnalyzer.from_ase(trajectories[0], **kwargs)
    else:
        analyzer = kinisi.analyze.DiffusionAnalyzer.from_ase(trajectories, dtype="identical", **kwargs)
    analyzer.diffusion(sc.scalar(start, unit="fs"), n_samples=n_samples, n_burn=max(100, n_samples // 2),
                       progress=False, random_state=np.random.RandomState(seed))
    d = sc.to_unit(analyzer.D, "cm^2/s").values
    m = analyzer.msd
    return Diffusivity(symbol, float(temperature_K), np.asarray(d, dtype=np.float64),
                       np.asarray(analyzer.dt.values, dtype=np.float64), np.asarray(m.values, dtype=np.float64),
                       np.sqrt(np.asarray(m.variances, dtype=np.float64)), start, len(trajectories),
                       int(np.sum(numbers == species)), abs(float(np.linalg.det(cell))))


@dataclass(frozen=True)
class ArrheniusFit:
    """kinisi's Arrhenius fit of D(T): posterior samples of the activation energy (eV), the prefactor (cm^2/s) and
    D at ``extrapolated_K`` (cm^2/s)."""

    temperatures_K: np.ndarray
    activation_energy_eV: np.ndarray
    prefactor_cm2_per_s: np.ndarray
    extrapolated_K: float
    extrapolated_D_cm2_per_s: np.ndarray

    def predict(self, temperature_K: float | np.ndarray) -> np.ndarray:
        """Posterior mean of D (cm^2/s) at ``temperature_K``."""
        t = np.atleast_1d(np.asarray(temperature_K, dtype=np.float64))
        kb = units.kB
        d = self.prefactor_cm2_per_s[None, :] * np.exp(-self.activation_energy_eV[None, :] / (kb * t[:, None]))
        return d.mean(axis=1)


EA_PRIOR_EV = (0.0, 3.0)  # uniform
D0_PRIOR_CM2_PER_S = (1e-8, 1e3)  # log-uniform


def arrhenius(
    diffusivities: Sequence[Diffusivity], extrapolated_K: float = 300.0, n_samples: int = 500, seed: int = 0,
) -> ArrheniusFit:
    """Fit D(T) = D0 exp(-Ea / kT) to two or more temperatures (each D's mean and variance) with kinisi and
    extrapolate to ``extrapolated_K``. Priors: Ea uniform on :data:`EA_PRIOR_EV`, D0 log-uniform on
    :data:`D0_PRIOR_CM2_PER_S` (kinisi's default, +-50 % around a maximum likelihood started at Ea = 1 eV,
    D0 = 1 cm^2/s, fails on noisy data: a negative Ea overflows)."""
    from scipy import stats

    kinisi, sc = _kinisi()
    if len({d.temperature_K for d in diffusivities}) < 2:
        raise ValueError("an Arrhenius fit needs diffusivities at two or more temperatures")
    t = np.array([d.temperature_K for d in diffusivities])
    mean = np.array([d.mean_cm2_per_s for d in diffusivities])
    if np.any(mean <= 0):
        raise ValueError(f"an Arrhenius fit needs positive D, got {mean.tolist()} cm^2/s at {t.tolist()} K")
    data = sc.DataArray(
        data=sc.array(dims=["temperature"], values=mean,
                      variances=np.array([d.std_cm2_per_s for d in diffusivities]) ** 2, unit="cm^2/s"),
        coords={"temperature": sc.array(dims=["temperature"], values=t, unit="K")})
    priors = [stats.uniform(EA_PRIOR_EV[0], EA_PRIOR_EV[1] - EA_PRIOR_EV[0]), stats.loguniform(*D0_PRIOR_CM2_PER_S)]
    state = np.random.get_state()
    np.random.seed(seed)  # kinisi starts its walkers from numpy's global generator
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):  # its sampler draws a bar
            warnings.simplefilter("ignore", RuntimeWarning)  # finite differences of the optimiser near the bounds
            fit = kinisi.arrhenius.Arrhenius(data, priors=priors)
            fit.mcmc(n_samples=n_samples, n_burn=max(100, n_samples // 2))
    finally:
        np.random.set_state(state)
    extrapolated = fit.extrapolate(sc.scalar(float(extrapolated_K), unit="K"))
    return ArrheniusFit(t, np.asarray(fit.activation_energy.values, dtype=np.float64),
                        np.asarray(sc.to_unit(fit.preexponential_factor, "cm^2/s").values, dtype=np.float64),
                        float(extrapolated_K), np.asarray(sc.to_unit(extrapolated, "cm^2/s").values,
                                                          dtype=np.float64))


def arrhenius_summary(fit: ArrheniusFit, n_carriers: int, volume_A3: float, charge: float = 1.0) -> dict:
    """Ea, D and Nernst-Einstein sigma at the extrapolated temperature (mean, std, 95 % interval), for metrics."""
    sigma = np.asarray(nernst_einstein_conductivity(fit.extrapolated_D_cm2_per_s, n_carriers, volume_A3,
                                                    fit.extrapolated_K, charge))
    return {"temperatures_K": fit.temperatures_K.tolist(), "Ea_eV": _summary(fit.activation_energy_eV),
            "extrapolated_K": fit.extrapolated_K, "D_cm2_per_s": _summary(fit.extrapolated_D_cm2_per_s),
            "sigma_S_per_cm": _summary(sigma), "minus_log10_sigma": _summary(-np.log10(np.clip(sigma, 1e-300, None)))}
