"""MSD, diffusion, Nernst-Einstein conductivity and Arrhenius fits on synthetic data."""

from __future__ import annotations

import numpy as np
import pytest

from longmd.analysis.transport import (
    arrhenius_fit,
    fit_diffusion,
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


def test_random_walk_recovers_known_diffusion_coefficient() -> None:
    sigma, dt = 0.1, 2.0  # per-component step std (Å) per frame interval (fs)
    d_true = sigma**2 / (2 * dt)  # Å^2/fs, from MSD = 6 D t
    lag, values = msd(_random_walk(1000, 400, sigma), dt)
    fit = fit_diffusion(lag, values)
    # seed-to-seed scatter of this estimate is ~4 % (the test is seeded); allow 2.5 standard deviations
    assert fit.diffusion_A2_per_fs == pytest.approx(d_true, rel=0.1)
    assert fit.diffusion_cm2_per_s == pytest.approx(0.1 * fit.diffusion_A2_per_fs)
    assert (fit.t_min_fs, fit.t_max_fs) == pytest.approx((0.1 * lag[-1], 0.5 * lag[-1]))


def test_fit_of_exact_line_and_dimension() -> None:
    t = np.linspace(0, 100, 101)
    fit = fit_diffusion(t, 6 * 0.02 * t + 0.3, t_min_fs=10, t_max_fs=90)
    assert fit.diffusion_A2_per_fs == pytest.approx(0.02)
    assert fit.intercept_A2 == pytest.approx(0.3)
    assert fit.ols_stderr_cm2_per_s == pytest.approx(0.0, abs=1e-12)
    assert fit_diffusion(t, 4 * 0.02 * t, dim=2).diffusion_A2_per_fs == pytest.approx(0.02)
    with pytest.raises(ValueError):
        fit_diffusion(t, t, t_min_fs=50, t_max_fs=51)


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


def test_arrhenius_recovers_activation_energy_and_300k_value() -> None:
    temps = np.array([600.0, 700.0, 800.0, 900.0, 1000.0])
    ea, d0 = 0.25, 1e-3
    fit = arrhenius_fit(temps, d0 * np.exp(-ea / (KB_EV_PER_K * temps)))
    assert fit.activation_energy_eV == pytest.approx(ea, rel=1e-9)
    assert fit.predict(300.0) == pytest.approx(d0 * np.exp(-ea / (KB_EV_PER_K * 300.0)), rel=1e-9)
    assert fit.stderr_eV == pytest.approx(0.0, abs=1e-9)
    # conductivity: sigma T = A exp(-Ea / kB T)
    a = 5e4
    sigma = a / temps * np.exp(-0.4 / (KB_EV_PER_K * temps))
    fit_s = arrhenius_fit(temps, sigma, times_temperature=True)
    assert fit_s.activation_energy_eV == pytest.approx(0.4, rel=1e-9)
    assert fit_s.predict(300.0) == pytest.approx(a / 300.0 * np.exp(-0.4 / (KB_EV_PER_K * 300.0)), rel=1e-9)
    np.testing.assert_allclose(fit_s.predict(temps), sigma, rtol=1e-9)
    with pytest.raises(ValueError):
        arrhenius_fit([300.0], [1.0])
