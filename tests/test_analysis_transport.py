"""MSD, diffusion (kinisi), Nernst-Einstein conductivity and Arrhenius fits (kinisi) on synthetic data with known
answers: Brownian motion of known D, exact Arrhenius data of known Ea."""

from __future__ import annotations

import numpy as np
import pytest

from longmd.analysis.transport import (
    Diffusivity,
    arrhenius,
    arrhenius_summary,
    diffusivity,
    msd,
    nernst_einstein_conductivity,
)
from longmd.data.trajectory import unwrap_positions
from longmd.units import KB_EV_PER_K


def _random_walk(n_frames: int, n_atoms: int, sigma: float, seed: int = 0) -> np.ndarray:
    steps = np.random.default_rng(seed).normal(0.0, sigma, size=(n_frames - 1, n_atoms, 3))
    return np.concatenate([np.zeros((1, n_atoms, 3)), np.cumsum(steps, axis=0)])


def _msd_brute_force(pos: np.ndarray) -> np.ndarray:
    n = len(pos)
    return np.array([np.mean(np.sum((pos[m:] - pos[: n - m]) ** 2, axis=-1)) for m in range(n)])


def test_fft_msd_equals_brute_force() -> None:
    pos = _random_walk(40, 5, 0.3) + 50.0
    lag, values = msd(pos, frame_interval_fs=2.0)
    np.testing.assert_allclose(lag, np.arange(40) * 2.0)
    np.testing.assert_allclose(values, _msd_brute_force(pos), rtol=1e-9, atol=1e-10)
    _, first = msd(pos, 2.0, average_origins=False, max_lag=10)
    np.testing.assert_allclose(first, np.mean(np.sum((pos[:11] - pos[0]) ** 2, axis=-1), axis=1))
    _, some = msd(pos, 2.0, atoms=np.array([True, False, True, False, False]), max_lag=5)
    np.testing.assert_allclose(some, _msd_brute_force(pos[:, [0, 2]])[:6], rtol=1e-9, atol=1e-10)


def _brownian_run(d_A2_per_fs: float, dt: float, n_frames: int, seed: int, drift_A_per_fs: float = 0.0):
    """16 Li on a random walk of diffusivity D plus 8 S at rest, in a 10 Å cube, wrapped; ``drift`` moves every
    atom alike (the framework's drift, which the analysis must remove)."""
    rng = np.random.default_rng(seed)
    li = 5.0 + _random_walk(n_frames, 16, np.sqrt(2 * d_A2_per_fs * dt), seed=seed)
    s = np.broadcast_to(rng.random((1, 8, 3)) * 10.0, (n_frames, 8, 3))
    pos = np.concatenate([li, s], axis=1) + drift_A_per_fs * dt * np.arange(n_frames)[:, None, None]
    return np.mod(pos, 10.0), np.array([3] * 16 + [16] * 8), np.eye(3) * 10.0


def test_brownian_motion_gives_its_diffusivity_with_an_honest_error_bar() -> None:
    """kinisi's D of a random walk with D = 0.01 Å^2/fs (1e-3 cm^2/s) lies within 3 of its standard deviations
    of the truth, the deviation is a few per cent (not zero, not the whole value), a uniform drift of all atoms
    changes nothing, and pooling two independent runs narrows the posterior."""
    pytest.importorskip("kinisi")
    d_true, dt = 0.01, 2.0
    pos, numbers, cell = _brownian_run(d_true, dt, 600, seed=1)
    one = diffusivity([pos], numbers, cell, dt, 1000.0, n_samples=200)
    assert isinstance(one, Diffusivity) and one.species == "Li" and one.n_carriers == 16
    assert abs(one.mean_cm2_per_s - 1e-3) < 3 * one.std_cm2_per_s
    assert 0.01 < one.std_cm2_per_s / one.mean_cm2_per_s < 0.3
    drifting, *_ = _brownian_run(d_true, dt, 600, seed=1, drift_A_per_fs=0.02)
    moved = diffusivity([drifting], numbers, cell, dt, 1000.0, n_samples=200)
    assert moved.mean_cm2_per_s == pytest.approx(one.mean_cm2_per_s, rel=0.02)
    other, *_ = _brownian_run(d_true, dt, 600, seed=2)
    both = diffusivity([pos, other], numbers, cell, dt, 1000.0, n_samples=200)
    assert both.n_runs == 2 and both.std_cm2_per_s < one.std_cm2_per_s
    assert abs(both.mean_cm2_per_s - 1e-3) < 3 * both.std_cm2_per_s
    summary = both.summary()
    sigma = nernst_einstein_conductivity(both.mean_cm2_per_s, 16, 1000.0, 1000.0)
    assert summary["sigma_S_per_cm"]["mean"] == pytest.approx(sigma, rel=1e-9)
    assert summary["D_cm2_per_s"]["ci95"][0] < summary["D_cm2_per_s"]["mean"] < summary["D_cm2_per_s"]["ci95"][1]
    with pytest.raises(ValueError, match="Z=8"):
        diffusivity([pos], numbers, cell, dt, 1000.0, species=8)


def _exact(t: float, d: float, rel: float) -> Diffusivity:
    """A stand-in diffusivity: Gaussian samples of mean d and relative width rel."""
    samples = d * (1 + rel * np.random.default_rng(int(t)).standard_normal(4000))
    return Diffusivity("Li", t, samples, np.zeros(1), np.zeros(1), np.zeros(1), 0.0, 1, 20, 1000.0)


def test_arrhenius_recovers_activation_energy_and_300k_value() -> None:
    """D = D0 exp(-Ea / kT) with Ea = 0.25 eV at 800-1200 K, each D known to 5 %: kinisi's posterior holds the true
    Ea and the true 300 K value within its 95 % intervals, the 300 K error bar is wider than the data's (it is an
    extrapolation), and sigma(300 K) follows from Nernst-Einstein."""
    pytest.importorskip("kinisi")
    temps = np.array([800.0, 900.0, 1000.0, 1100.0, 1200.0])
    ea, d0 = 0.25, 1e-2
    fit = arrhenius([_exact(t, d0 * np.exp(-ea / (KB_EV_PER_K * t)), 0.05) for t in temps], n_samples=200)
    lo, hi = np.percentile(fit.activation_energy_eV, [2.5, 97.5])
    assert lo < ea < hi and hi - lo < 0.1
    d300 = d0 * np.exp(-ea / (KB_EV_PER_K * 300.0))
    lo, hi = np.percentile(np.log10(fit.extrapolated_D_cm2_per_s), [2.5, 97.5])
    assert lo < np.log10(d300) < hi and hi - lo > 2 * 0.05 / np.log(10)
    np.testing.assert_allclose(fit.predict(temps), d0 * np.exp(-ea / (KB_EV_PER_K * temps)), rtol=0.15)
    summary = arrhenius_summary(fit, n_carriers=20, volume_A3=1000.0)
    sigma = nernst_einstein_conductivity(fit.extrapolated_D_cm2_per_s, 20, 1000.0, 300.0)
    assert summary["sigma_S_per_cm"]["mean"] == pytest.approx(float(np.mean(sigma)))
    assert summary["minus_log10_sigma"]["mean"] == pytest.approx(float(np.mean(-np.log10(sigma))))
    with pytest.raises(ValueError, match="two or more temperatures"):
        arrhenius([_exact(800.0, 1e-5, 0.05)])


def test_unwrap_recovers_continuous_path() -> None:
    cell = np.array([[6.0, 0.0, 0.0], [1.0, 5.0, 0.0], [0.0, 0.0, 7.0]])
    path = _random_walk(300, 4, 0.4, seed=2) + 3.0
    frac = path @ np.linalg.inv(cell)
    wrapped = (frac - np.floor(frac)) @ cell
    unwrapped = unwrap_positions(wrapped, cell, pbc=True)
    np.testing.assert_allclose(unwrapped[0], wrapped[0])  # starts from the wrapped first frame
    np.testing.assert_allclose(unwrapped - unwrapped[0], path - path[0], atol=1e-9)


def test_nernst_einstein_against_hand_computed_value() -> None:
    # n = 10 / 1000 Å^3 = 1e22 cm^-3; sigma = n e^2 D / (kB T)
    # = 1e22 * (1.602176634e-19)^2 * 1e-5 / (1.380649e-23 * 300) = 0.61974959 S/cm
    sigma = nernst_einstein_conductivity(1e-5, n_carriers=10, volume_A3=1000.0, temperature_K=300.0)
    assert sigma == pytest.approx(0.6197495928, rel=1e-6)
    doubly = nernst_einstein_conductivity(1e-5, 10, 1000.0, 300.0, charge=2.0, haven_ratio=0.5)
    assert doubly == pytest.approx(8 * sigma)
