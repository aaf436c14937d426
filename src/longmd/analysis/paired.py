"""Paired comparisons of two models tested on the same starts: differences per start, bootstrap confidence
intervals and the smallest effect a test of that size can detect.

Scores are arrays ``(n_seeds, n_starts)``: one value (e.g. a rollout's mean MEPA) per training seed and test
start, every model tested from the same starts. Two treatments of the seeds are reported:

- **start level** (the primary one): the per-start difference is averaged over the seeds, and the bootstrap
  resamples starts. It answers "do these trained models differ on this kind of start?", seeds held fixed.
- **seed and start level**: the bootstrap resamples seeds and starts independently (the two factors are
  crossed: every seed sees every start), so the interval also covers seed-to-seed spread. With three seeds it
  is coarse (a resample of 3 holds at most 3 distinct seeds) and wider.

Intervals are percentile bootstrap intervals. The detectable effect uses the normal approximation of a
two-sided paired test: ``(z_{1-alpha/2} + z_{power}) x SE`` with SE the standard error of the mean paired
difference over starts (2.80 x SE for alpha = 0.05 and 80 % power).
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np


def detectable_factor(alpha: float = 0.05, power: float = 0.8) -> float:
    """``z_{1-alpha/2} + z_{power}``: 2.80 for a two-sided alpha = 0.05 test with 80 % power."""
    z = NormalDist().inv_cdf
    return z(1 - alpha / 2) + z(power)


def standard_error(values: np.ndarray) -> float:
    """Standard error of the mean of ``values`` (sample standard deviation, ddof = 1, over sqrt n)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if len(v) < 2:
        return float("nan")
    return float(v.std(ddof=1) / np.sqrt(len(v)))


def detectable_effect(differences: np.ndarray, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest mean difference a two-sided paired test on these ``differences`` detects with ``power``."""
    return detectable_factor(alpha, power) * standard_error(differences)


def bootstrap_mean_ci(values: np.ndarray, n_boot: int = 10000, level: float = 0.95,
                      seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (resampled with replacement)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    idx = np.random.default_rng(seed).integers(0, len(v), size=(n_boot, len(v)))
    means = v[idx].mean(axis=1)
    return _percentiles(means, level)


def _percentiles(samples: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.percentile(samples, [50 * (1 - level), 50 * (1 + level)], axis=0)
    return float(lo), float(hi)


def paired_comparison(base: np.ndarray, other: np.ndarray, n_boot: int = 10000, level: float = 0.95,
                      seed: int = 0, alpha: float = 0.05, power: float = 0.8) -> dict:
    """``other - base`` on the same (seed, start) grid ``(n_seeds, n_starts)``; negative = ``other`` lower.

    Returns the mean difference and the relative one (``mean(other) / mean(base) - 1``) with their bootstrap
    intervals at start level and at seed-and-start level (module docstring), the per-seed mean differences,
    the standard error over starts and the detectable effect (absolute and relative to ``mean(base)``).
    """
    a = np.atleast_2d(np.asarray(base, dtype=np.float64))
    b = np.atleast_2d(np.asarray(other, dtype=np.float64))
    if a.shape != b.shape:
        raise ValueError(f"paired_comparison: scores of different shapes {a.shape} and {b.shape}")
    n_seeds, n_starts = a.shape
    per_start = (b - a).mean(axis=0)  # averaged over seeds
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n_starts, size=(n_boot, n_starts))
    a_start, b_start = a.mean(axis=0)[starts].mean(axis=1), b.mean(axis=0)[starts].mean(axis=1)
    seeds = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    grid = [(a[s][:, t].mean(), b[s][:, t].mean()) for s, t in zip(seeds, starts)]
    a_grid, b_grid = np.array(grid).T
    se = standard_error(per_start)
    mde = detectable_effect(per_start, alpha, power)
    mean_a = float(a.mean())
    return {
        "n_seeds": n_seeds,
        "n_starts": n_starts,
        "mean_base": mean_a,
        "mean_other": float(b.mean()),
        "difference": float(per_start.mean()),
        "relative": float(b.mean() / mean_a - 1),
        "ci_start_level": _percentiles(b_start - a_start, level),
        "relative_ci_start_level": _percentiles(b_start / a_start - 1, level),
        "ci_seed_and_start_level": _percentiles(b_grid - a_grid, level),
        "relative_ci_seed_and_start_level": _percentiles(b_grid / a_grid - 1, level),
        "per_seed_difference": (b - a).mean(axis=1).tolist(),
        "other_lower_fraction_of_starts": float(np.mean(per_start < 0)),
        "se_start_level": se,
        "detectable_effect": mde,
        "detectable_relative": mde / mean_a,
        "level": level,
        "n_boot": n_boot,
        "alpha": alpha,
        "power": power,
    }


def bootstrap_curve_band(curves: np.ndarray, n_boot: int = 2000, level: float = 0.95,
                         seed: int = 0) -> dict[str, np.ndarray]:
    """Mean curve over starts ``(n_starts, L)`` and its percentile bootstrap band (starts resampled)."""
    c = np.asarray(curves, dtype=np.float64)
    idx = np.random.default_rng(seed).integers(0, len(c), size=(n_boot, len(c)))
    means = np.stack([c[i].mean(axis=0) for i in idx])
    lo, hi = np.percentile(means, [50 * (1 - level), 50 * (1 + level)], axis=0)
    return {"mean": c.mean(axis=0), "lo": lo, "hi": hi}
