"""``longmd evaluate`` of a stride predictor: its own parts, the velocity-Verlet baseline and the report."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from longmd.evaluation import EvalOptions, evaluate
from longmd.io.read import read_trajectories
from longmd.models.stride_egnn import EquivariantStride

EMT_SPEC = "ase:ase.calculators.emt:EMT"


@pytest.fixture(scope="module")
def trajectories(emt_data):
    return read_trajectories(emt_data)


def free_flight(trajectories, stride_fs: float) -> EquivariantStride:
    tr = trajectories[0]
    masses = dict(zip(tr.numbers.tolist(), tr.masses.tolist(), strict=False))
    return EquivariantStride.build(sorted(masses), masses, stride_fs, hidden=8, n_layers=1).double()


def test_stride_predictor_evaluation_with_a_companion(trajectories, tmp_path):
    torch.set_num_threads(1)
    options = EvalOptions(progress=False, companion=EMT_SPEC, stride_steps=10, stride_run_strides=12,
                          speed_steps=2, temperature_K=600.0)
    m = evaluate({"flight": free_flight(trajectories, 2.0)}, trajectories, tmp_path, test=[0, 1], parts="rollout",
                 options=options)
    r = m["models"]["flight"]["stride"]
    assert "rollout" not in m["models"]["flight"]  # the potential's parts need forces
    assert r["stride_frames"] == 1 and r["errors"]["strides"] == 10 and r["errors"]["starts"] == 2
    vv = r["errors"]["velocity_verlet"]["position_deviation_A"]
    assert max(vv) < 1e-6  # the companion is the reference and the stride its timestep: the data exactly
    dq = r["errors"]["predictor"]["position_deviation_A"]
    assert dq[0] == 0 and dq[-1] > 1e-3  # free flight leaves the reference
    filtered, unfiltered = r["energy"]["filtered"], r["energy"]["unfiltered"]
    assert filtered["filters"] == ["com", "energy"] and unfiltered["filters"] == ["com"]
    if filtered["strides_run"] >= 1:
        assert filtered["max_deviation_meV_per_atom"] < 1e-6  # the filter restores the companion's energy
    assert unfiltered["max_deviation_meV_per_atom"] > 1.0
    for ensemble in ("langevin", "svr"):
        t = r["temperature"][ensemble]
        assert t["target_K"] == 600.0 and set(t["species_K"]) == {"Cu", "Au"}
    assert r["speed"]["s_per_ps_predictor"] > 0 and r["speed"]["speedup"] > 0
    shape = r["structure"]  # Langevin: the predictor and two velocity-Verlet runs with the companion
    assert shape["strides"] == 12 and shape["temperature_K"] == 600.0
    assert shape["stopped"]["velocity_verlet_1"] is None and shape["stopped"]["velocity_verlet_2"] is None
    assert shape["noise_floor"]["hr_mae"] > 0  # another thermostat seed: another sample of the same structure
    for run in ("predictor", "velocity_verlet_1", "velocity_verlet_2"):
        assert set(shape["msd"][run]) == {"Cu", "Au"} and abs(shape["msd"][run]["Cu"]["msd_A2"][0]) < 1e-12
        assert shape["msd"][run]["Au"]["final_A2"] > 0
    assert set(shape["msd_within_noise"]) == {"Cu", "Au"}
    assert (tmp_path / "stride_rdf_flight.png").exists() and (tmp_path / "stride_msd_flight.png").exists()
    report = (tmp_path / "report.md").read_text()
    assert "## Stride predictors" in report and (tmp_path / "stride_errors_flight.png").exists()
    assert "MSD at half the run" in report
    assert np.isfinite(dq).all()


def test_a_stride_that_is_not_a_multiple_of_the_data_timestep_is_refused(trajectories, tmp_path):
    with pytest.raises(ValueError, match="not a multiple of the data's timestep 2.0 fs"):
        evaluate({"odd": free_flight(trajectories, 3.0)}, trajectories, tmp_path, test=[0],
                 options=EvalOptions(progress=False))
