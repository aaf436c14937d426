"""Paired statistics of models tested on the same starts (longmd.analysis.paired), against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from longmd.analysis.paired import (
    bootstrap_curve_band,
    bootstrap_mean_ci,
    detectable_effect,
    detectable_factor,
    paired_comparison,
    standard_error,
)


def test_detectable_effect_by_hand():
    # z_0.975 + z_0.8 = 1.959964 + 0.841621
    assert detectable_factor() == pytest.approx(2.801585, abs=1e-6)
    d = np.array([1.0, 2.0, 3.0, 4.0])  # sd (ddof 1) = sqrt(5/3) = 1.290994; SE = 0.645497
    assert standard_error(d) == pytest.approx(0.645497, abs=1e-6)
    assert detectable_effect(d) == pytest.approx(2.801585 * 0.645497, abs=1e-5)
    assert np.isnan(standard_error(np.array([1.0])))


def test_bootstrap_ci_by_hand():
    # Two values {0, 1}: the resampled mean is 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4, so the 95 % percentile
    # interval is [0, 1] and the central 40 % one is [0.5, 0.5].
    assert bootstrap_mean_ci(np.array([0.0, 1.0]), n_boot=20000) == (0.0, 1.0)
    assert bootstrap_mean_ci(np.array([0.0, 1.0]), n_boot=20000, level=0.4) == (0.5, 0.5)
    assert bootstrap_mean_ci(np.full(7, 2.5)) == (2.5, 2.5)  # no spread, no width


def test_paired_differences_per_start():
    base = np.array([[1.0, 2.0, 3.0, 4.0], [2.0, 3.0, 4.0, 5.0]])  # 2 seeds x 4 starts
    shift = np.array([-0.1, -0.3, -0.1, -0.3])
    r = paired_comparison(base, base + shift, n_boot=4000)
    assert r["n_seeds"] == 2 and r["n_starts"] == 4
    assert r["difference"] == pytest.approx(-0.2)
    assert r["per_seed_difference"] == pytest.approx([-0.2, -0.2])
    assert r["relative"] == pytest.approx(-0.2 / 3.0)
    assert r["se_start_level"] == pytest.approx(standard_error(shift))  # 0.1 / sqrt(3) * ... by the formula
    assert r["se_start_level"] == pytest.approx(np.std(shift, ddof=1) / 2)
    lo, hi = r["ci_start_level"]
    assert -0.3 <= lo <= -0.2 <= hi <= -0.1
    assert r["other_lower_fraction_of_starts"] == 1.0
    assert r["detectable_effect"] == pytest.approx(detectable_factor() * np.std(shift, ddof=1) / 2)
    # a constant shift has no start spread: a zero-width interval at the shift, at both levels
    same = paired_comparison(base, base - 0.5, n_boot=500)
    assert same["ci_start_level"] == pytest.approx((-0.5, -0.5))
    assert same["ci_seed_and_start_level"] == pytest.approx((-0.5, -0.5))
    with pytest.raises(ValueError, match="shapes"):
        paired_comparison(base, base[:, :3])


def test_pairing_removes_the_start_to_start_spread():
    rng = np.random.default_rng(0)
    hard = rng.uniform(0.5, 2.0, size=(3, 64))  # starts differ a lot, the models hardly at all
    r = paired_comparison(hard, hard * 0.95, n_boot=2000)
    assert r["relative"] == pytest.approx(-0.05)
    assert r["relative_ci_start_level"][1] < 0  # a 5 % effect on these starts is resolved
    assert r["detectable_relative"] < 0.05


def test_curve_band():
    curves = np.array([[0.0, 1.0], [2.0, 3.0]])
    band = bootstrap_curve_band(curves, n_boot=4000)
    assert band["mean"] == pytest.approx([1.0, 2.0])
    assert band["lo"] == pytest.approx([0.0, 1.0]) and band["hi"] == pytest.approx([2.0, 3.0])
