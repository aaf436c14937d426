"""benchmarks/vs_mace.py's report: means over training seeds, comparisons paired over the seeds both have."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import vs_mace  # noqa: E402


def _score(per_start: list[float], ns_per_day: float) -> dict:
    curves = np.repeat(np.asarray(per_start)[:, None], 3, axis=1)  # constant in time: start mean = value
    return {"n_parameters": 10,
            "rollout": {"mepa_mean": float(np.mean(per_start)), "failed": 0, "mepa_per_species_mean": {"H": 1.0},
                        "curves": {"per_start_mepa": curves.tolist(), "mepa": curves.mean(axis=0).tolist()}},
            "frames": {"force_mae": 0.1, "force_mae_per_species": {"H": 0.1}},
            "speed": {"ns_per_day": ns_per_day}}


def _run(minutes: float) -> dict:
    return {"train_minutes": minutes, "epochs": 10}


def test_seeds_pooled_and_paired_on_common_seeds():
    runs = {"a": {0: _run(10), 1: _run(20)}, "b": {0: _run(30)}}
    scores = {"a": {0: _score([1.0, 2.0], 4.0), 1: _score([3.0, 4.0], 2.0)}, "b": {0: _score([2.0, 2.0], 1.0)}}
    rows = vs_mace.summarize(runs, scores, bases=("a",))
    a, b = rows["a"], rows["b"]
    assert a["seeds"] == [0, 1] and b["seeds"] == [0]
    assert a["rollout_mepa"] == pytest.approx(2.5)  # mean of the seeds' means 1.5 and 3.5
    assert a["rollout_mepa_per_seed"] == {0: 1.5, 1: 3.5}
    assert a["train_minutes"] == pytest.approx(15.0) and a["ns_per_day"] == pytest.approx(3.0)
    vs = b["vs_a"]  # paired on seed 0 only: differences per start +1, 0
    assert vs["n_seeds"] == 1 and vs["difference"] == pytest.approx(0.5)
    assert vs["relative"] == pytest.approx(2.0 / 1.5 - 1)
    assert b["speed_vs_a"] == pytest.approx(1.0 / 3.0)
    assert "vs_a" not in a and a["speed_measured"] == "during its evaluation"


def test_quiet_speeds_replace_the_evaluations():
    runs = {"a": {0: _run(10)}}
    rows = vs_mace.summarize(runs, {"a": {0: _score([1.0], 4.0)}}, speeds={"a": {"ns_per_day": 9.0}}, bases=())
    assert rows["a"]["ns_per_day"] == 9.0 and rows["a"]["speed_measured"] == "one after another, alone"


def test_seed_list_parsed_and_checked():
    assert vs_mace.parse(["--seed", "0,2"]).seeds == [0, 2]
    for bad in (["--seed", "zero"], ["--seed", ","], ["--stages", "sped"]):
        with pytest.raises(SystemExit):
            vs_mace.parse(bad)


def test_budget_list_parsed_checked_and_plotted(tmp_path):
    args = vs_mace.parse(["--minutes", "30,60"])
    assert args.budgets == [30.0, 60.0] and args.minutes == 30.0
    assert vs_mace._budget(args, 60.0).minutes == 60.0 and args.minutes == 30.0  # a copy per budget
    for bad in (["--minutes", "half"], ["--minutes", "0"], ["--minutes", ","]):
        with pytest.raises(SystemExit):
            vs_mace.parse(bad)
    runs = {"a": {0: _run(30)}, "b": {0: _run(30)}}
    rows = {30.0: vs_mace.summarize(runs, {"a": {0: _score([1.0], 4.0)}, "b": {0: _score([2.0], 1.0)}}, bases=()),
            60.0: vs_mace.summarize({"a": {0: _run(60)}}, {"a": {0: _score([0.5], 4.0)}}, bases=())}
    assert vs_mace.plot_pareto(rows, tmp_path / "pareto.png").stat().st_size > 0  # b has one budget only
