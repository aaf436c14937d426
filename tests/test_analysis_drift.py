"""Energy drift and speed helpers."""

from __future__ import annotations

import numpy as np
import pytest

from longmd.analysis.drift import energy_drift, max_energy_deviation, ns_per_day, steps_per_second


def test_linear_drift_recovered_exactly() -> None:
    t = np.arange(0.0, 2000.0, 0.5)  # fs
    energy = -123.4 + 2e-6 * t  # eV: 2e-6 eV/fs = 2 eV/ps over 10 atoms = 0.2 eV/atom/ps
    assert energy_drift(t, energy, n_atoms=10) == pytest.approx(0.2e3 * 1e-3, rel=1e-9)
    assert energy_drift(t, energy[::-1], n_atoms=10) == pytest.approx(-0.2, rel=1e-9)
    noisy = energy + 1e-4 * np.sin(t)
    assert energy_drift(t, noisy, 10) == pytest.approx(0.2, rel=1e-2)
    assert max_energy_deviation(energy, 10) == pytest.approx(2e-6 * 1999.5 * 1e3 / 10)
    with pytest.raises(ValueError):
        energy_drift(t[:1], energy[:1], 10)


def test_speed_helpers() -> None:
    assert steps_per_second(500, 50.0) == 10.0
    assert ns_per_day(10.0, 0.5) == pytest.approx(0.432)
