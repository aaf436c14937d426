"""``longmd evaluate``: the reference potential evaluated through the ASE adapter scores zero (same integrator,
same timestep), wrong or exploding models do not, and the CLI writes metrics.json, report.md and plots."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase.data import chemical_symbols

from longmd.cli import main
from longmd.data.splits import split_by_trajectory
from longmd.evaluation import EvalOptions, TrackedPair, evaluate, parse_parts
from longmd.evaluation.core import fingerprint
from longmd.evaluation.heldout import HeldOut
from longmd.io.read import read_trajectories
from longmd.models.ase_adapter import ASECalculatorModel
from longmd.models.io import save_model
from longmd.models.lj import LennardJones

EMT_SPEC = "ase:ase.calculators.emt:EMT"
FAST = {"progress": False, "frames_max": 20, "speed_steps": 3, "speed_warmup": 1}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def trajectories(emt_data):
    return read_trajectories(emt_data)


def emt() -> ASECalculatorModel:
    return ASECalculatorModel.from_spec(EMT_SPEC)


def wrong_lj() -> LennardJones:
    """A stable but wrong potential for Cu/Au."""
    return LennardJones(epsilon=0.4, sigma=2.3, cutoff=5.0, r_switch=4.0)


def test_reference_through_the_adapter_scores_zero(trajectories, tmp_path) -> None:
    options = EvalOptions(long_steps=39, record_every=1, long_runs=2, **FAST)
    m = evaluate({"EMT": emt(), "LJ": wrong_lj()}, trajectories, tmp_path, test=[0, 1],
                 parts="rollout,frames,stability,drift,speed", options=options)
    ref, lj = m["models"]["EMT"], m["models"]["LJ"]
    assert ref["rollout"]["steps"] == 39  # 300 asked, capped by the 40-frame trajectories
    assert len(ref["rollout"]["starts"]) == 2 and ref["rollout"]["failed"] == 0
    assert ref["rollout"]["mepa_mean"] < 1e-5  # same integrator and timestep as the reference: only rounding
    assert max(ref["rollout"]["curves"]["position_deviation_A"]) < 1e-6
    assert lj["rollout"]["mepa_mean"] > 0.05 and lj["rollout"]["mepa_final"] > 0.05
    starts = lj["rollout"]["curves"]["over_starts"]  # what mepa_vs_step.png draws: mean and band over 2 starts
    assert starts["n"] == 2 and set(starts["per_species"]) == {"Cu", "Au"}
    np.testing.assert_allclose(starts["mepa"]["mean"], lj["rollout"]["curves"]["mepa"], rtol=1e-12)
    assert np.all(np.asarray(starts["mepa"]["lo"]) <= np.asarray(starts["mepa"]["hi"]))
    assert ref["frames"]["force_mae"] < 1e-5 and ref["frames"]["energy_mae_per_atom"] < 1e-6
    assert lj["frames"]["force_mae"] > 0.05
    assert set(ref["frames"]["force_mae_per_species"]) == {"Cu", "Au"}
    s = ref["stability"]
    assert s["stable_runs"] == 2 and s["stability_time_min_fs"] == pytest.approx(78.0)
    # the runs replay the reference from frame 0: their final frames are the reference's final frames
    assert s["hr_mae"] < 1e-9 and s["rdf_mae"] < 1e-9
    assert lj["stability"]["hr_mae"] > 1e-3
    # verdicts: the replay is stable with no failure mode; the wrong potential moves the Au-Au neighbour shell
    assert s["verdict"]["stable"] and s["verdict"]["failure_modes"] == [] and s["verdict"]["rdf_mae_threshold"] == 0.02
    bad = lj["stability"]["verdict"]
    assert not bad["stable"] and "lattice mismatch" in bad["failure_modes"]
    assert "atom fusion" not in bad["failure_modes"]
    assert abs(bad["evidence"]["lattice mismatch"]["Au-Au"]) > 0.1 and "Verdict" in (tmp_path / "report.md").read_text()
    # bonding per ordered species pair, reference first: the replayed runs' equal the reference's exactly
    ref_bonds = m["reference"]["stability"]["structure"]["bonds"]
    assert set(ref_bonds) == {"Cu-Cu", "Cu-Au", "Au-Cu", "Au-Au"} and ref_bonds["Cu-Au"]["coordination"] > 0
    for key, b in s["structure"]["bonds"].items():  # rounding only (the runs' positions are float64 replays)
        assert b["coordination"] == ref_bonds[key]["coordination"] and s["coordination_difference"][key] == 0.0
        assert b["min_distance_A"] == pytest.approx(ref_bonds[key]["min_distance_A"], abs=1e-6)
    assert "Bonds in the final frames" in (tmp_path / "report.md").read_text()
    assert ref["drift"]["source"] == "stability runs" and abs(ref["drift"]["drift_meV_per_atom_per_ps"]) < 1.0
    assert ref["speed"]["steps_per_s"] > 0 and ref["speed"]["replicas"] == 1
    files = {p.name for p in tmp_path.iterdir()}
    assert {"metrics.json", "report.md", "mepa_vs_step.png", "parity_forces_EMT.png", "distance_histogram.png",
            "rdf.png", "energy_drift.png"} <= files
    assert json.loads((tmp_path / "metrics.json").read_text())["models"]["LJ"]["n_parameters"] == 0


def test_tracked_distances_and_events_match_the_reference(trajectories, tmp_path) -> None:
    tr = trajectories[0]
    d0 = float(np.linalg.norm(tr.positions[0, 1] - tr.positions[0, 0]))
    options = EvalOptions(long_steps=39, record_every=1, long_runs=1, event_min_fs=4.0,
                          track=[TrackedPair(0, 1, round(d0, 2))], **FAST)
    m = evaluate({"EMT": emt()}, trajectories, tmp_path, test=[0], parts="stability", options=options)
    ref = m["reference"]["stability"]["tracked"][0]
    got = m["models"]["EMT"]["stability"]["tracked"][0]
    symbols = [chemical_symbols[z] for z in tr.numbers[:2]]
    assert ref["label"] == got["label"] == f"{symbols[0]}0-{symbols[1]}1"
    np.testing.assert_allclose(got["runs"][0]["distance_A"], ref["runs"][0]["distance_A"], atol=1e-6)
    assert got["events"] == ref["events"]
    assert (tmp_path / f"tracked_{ref['label']}.png").exists()


def test_exploding_model_is_reported_not_raised(trajectories, tmp_path) -> None:
    bad = LennardJones(epsilon=0.5, sigma=2.9, cutoff=5.0)  # far too large for Cu-Cu at 2.55 Å
    options = EvalOptions(long_steps=30, rollout_steps=20, **FAST)
    m = evaluate({"bad": bad}, trajectories, tmp_path, test=[2, 3], parts="rollout,stability,drift", options=options)
    s = m["models"]["bad"]["stability"]
    assert s["stable_runs"] == 0 and {r["reason"] for r in s["runs"]} <= {"temperature", "min_distance", "nan"}
    assert s["stability_time_min_fs"] < 30 * 2.0
    report = (tmp_path / "report.md").read_text()
    assert "stopped at step" in report and "| bad | 0/2 |" in report


class NaNModel(LennardJones):
    """Non-finite from the very first force call."""

    def forward(self, graph):
        return super().forward(graph) * float("nan")


def test_non_finite_model_is_reported_in_every_part(trajectories, tmp_path) -> None:
    options = EvalOptions(long_steps=10, rollout_steps=5, **FAST)
    m = evaluate({"nan": NaNModel(cutoff=5.0)}, trajectories, tmp_path, options=options)
    e = m["models"]["nan"]
    assert e["rollout"]["failed"] == 4 and e["rollout"]["mepa_mean"] is None  # inf is written as null
    assert e["frames"]["force_mae"] is None
    assert {r["reason"] for r in e["stability"]["runs"]} == {"nan"} and e["stability"]["hr_mae"] is None
    assert e["drift"]["drift_meV_per_atom_per_ps"] is None and e["speed"]["steps_per_s"] is None
    assert "| nan | 0/2 |" in (tmp_path / "report.md").read_text()


def test_resume_reuses_finished_parts(trajectories, tmp_path) -> None:
    options = EvalOptions(rollout_steps=10, **FAST)
    first = evaluate({"EMT": emt()}, trajectories, tmp_path, parts="rollout,jaccard", options=options,
                     specs={"EMT": EMT_SPEC})
    model = emt()
    again = evaluate({"EMT": model}, trajectories, tmp_path, parts="rollout,jaccard", options=options,
                     specs={"EMT": EMT_SPEC}, resume=True)
    assert model.calls == 0
    assert again["models"]["EMT"]["rollout"] == first["models"]["EMT"]["rollout"]
    changed = evaluate({"EMT": model}, trajectories, tmp_path, parts="rollout", options=options.replace(seed=1),
                       specs={"EMT": EMT_SPEC}, resume=True)
    assert model.calls > 0 and "rollout" in changed["models"]["EMT"]
    lj = wrong_lj()  # without specs, a model fingerprint decides what is reused
    before = evaluate({"LJ": lj}, trajectories, tmp_path, parts="rollout", options=options)
    with torch.no_grad():
        lj.epsilon.mul_(2.0)
    after = evaluate({"LJ": lj}, trajectories, tmp_path, parts="rollout", options=options, resume=True)
    assert after["models"]["LJ"]["fingerprint"] != fingerprint(wrong_lj())
    assert after["models"]["LJ"]["rollout"]["mepa_mean"] != before["models"]["LJ"]["rollout"]["mepa_mean"]


def test_jaccard_langevin_stability_drift(trajectories, tmp_path) -> None:
    options = EvalOptions(long_steps=20, ensemble="langevin", drift_steps=20, long_runs=2, **FAST)
    m = evaluate({"EMT": emt()}, trajectories, tmp_path, parts="jaccard,stability,drift", options=options)
    jac = m["reference"]["jaccard"]
    assert jac["ks"] == list(range(1, 21)) and 0 <= jac["advised_neighbor_update_every"] <= 20
    assert set(jac["per_species"]) == {"Cu", "Au"} and jac["per_species"]["Cu"][0] > 0.9
    e = m["models"]["EMT"]
    assert e["stability"]["ensemble"] == "langevin" and e["stability"]["temperature_K"] > 0
    assert e["drift"]["source"] == "NVE run of 20 steps" and e["drift"]["drift_meV_per_atom_per_ps"] is not None
    assert (tmp_path / "jaccard.png").exists()


def test_transport_part_with_kinisi(trajectories, tmp_path) -> None:
    """D with its error bar for the reference (the four held-out NVE runs, grouped by their own temperatures) and
    the model (the reference potential, at 600 and 900 K), Arrhenius over the model's two temperatures, the
    -log10 sigma table and the MSD and Arrhenius plots."""
    pytest.importorskip("kinisi")
    options = EvalOptions(transport_steps=40, record_every=2, temperatures=[600.0, 900.0], transport_species="Au",
                          long_runs=2, transport_discard_fs=0.0, transport_samples=100, **FAST)
    m = evaluate({"EMT": emt()}, trajectories, tmp_path, parts="transport", options=options)
    ref, t = m["reference"]["transport"], m["models"]["EMT"]["transport"]
    assert ref["species"] == "Au" and sum(x["runs"] for x in ref["temperatures"]) == 4
    assert all(200 < x["temperature_K"] < 600 and x["D_cm2_per_s"]["std"] > 0 for x in ref["temperatures"])
    assert t["species"] == "Au" and [x["temperature_K"] for x in t["temperatures"]] == [600.0, 900.0]
    for x in t["temperatures"]:
        assert np.isfinite(x["D_cm2_per_s"]["mean"]) and x["D_cm2_per_s"]["std"] > 0 and x["runs"] == 2
    assert t["arrhenius"]["extrapolated_K"] == 300.0 and set(t["table"]) == {"600", "900", "300"}
    assert (tmp_path / "msd_EMT_600K.png").exists() and (tmp_path / "arrhenius_EMT.png").exists()
    assert "Table 2" in (tmp_path / "report.md").read_text()


def test_held_out_selection_and_starts(trajectories) -> None:
    split = split_by_trajectory(trajectories, 0.25, 0.25, seed=3)
    held = HeldOut.select(trajectories, split)
    assert held.indices == sorted(split.subsets["test"])
    windows = held.rollout_windows(10, 3, seed=0)
    assert len(windows) == 3 and all(w.length == 11 and w.traj in held.indices for w in windows)
    assert windows == held.rollout_windows(10, 3, seed=0)  # seeded
    starts = held.run_starts(3, seed=0)  # one test trajectory: its first frame, then seeded random frames
    assert starts[0] == (held.indices[0], 0) and len(starts) == 3 and {t for t, _ in starts} == {held.indices[0]}
    assert HeldOut.select(trajectories).indices == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="out of range"):
        HeldOut.select(trajectories, [7])
    empty = split_by_trajectory(trajectories, 0.25, 0.0)
    with pytest.raises(ValueError, match="no test trajectories"):
        HeldOut.select(trajectories, empty)
    assert parse_parts("speed, rollout") == ["rollout", "speed"] and "transport" not in parse_parts(None)
    with pytest.raises(ValueError, match="unknown evaluation parts"):
        parse_parts("rollout,bogus")


def test_cli_end_to_end(emt_data, trajectories, tmp_path, capsys) -> None:
    split = split_by_trajectory(trajectories, 0.25, 0.25, seed=1)
    split.save(tmp_path / "split.json")
    save_model(wrong_lj(), tmp_path / "lj.pt")
    out = tmp_path / "eval"
    rc = main(["evaluate", "--data", str(emt_data), "--split", str(tmp_path / "split.json"), "--model", EMT_SPEC,
               "--model", str(tmp_path / "lj.pt"), "--name", "emt", "--name", "lj", "--out", str(out),
               "--steps", "12", "--long-steps", "10", "--frames", "8", "--speed-steps", "2", "--no-progress",
               "--option", "record_every=2", "--threads", "1"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "emt: rollout MEPA" in printed and "results in" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["models"]) == ["emt", "lj"]
    assert metrics["models"]["emt"]["spec"] == EMT_SPEC and metrics["models"]["lj"]["class"] == "LennardJones"
    test_names = [trajectories[t].name for t in split.subsets["test"]]
    assert list(metrics["protocol"]["held_out"]) == test_names
    assert metrics["protocol"]["options"]["record_every"] == 2 and metrics["versions"]["ase"]
    assert metrics["models"]["emt"]["rollout"]["mepa_mean"] < 1e-5 < metrics["models"]["lj"]["rollout"]["mepa_mean"]
    report = (out / "report.md").read_text()
    for title in ("## Rollout test", "## Single-frame errors", "## Stability", "## Neighbourhood smoothness",
                  "## Energy drift (NVE) and speed"):
        assert title in report
    for png in metrics["plots"]:
        assert (out / png).stat().st_size > 1000


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("ase:no_such_module_abc:Calc", "cannot import 'no_such_module_abc'"),
        ("ase:ase.calculators.emt:Nope", "has no attribute 'Nope'"),
        ("missing_model.pt", "model file not found"),
        ("mace:small", "MACE model file not found: small"),
        ("egnn:small", "not a file; give a longmd model file, 'mace:PATH' or an ASE calculator"),
    ],
)
def test_cli_bad_model_specs(emt_data, tmp_path, capsys, model: str, message: str) -> None:
    rc = main(["evaluate", "--data", str(emt_data), "--model", model, "--out", str(tmp_path), "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_command_line_options() -> None:
    from longmd.cli import build_parser
    from longmd.evaluation.cli import options_from_args

    parse = build_parser().parse_args
    args = parse(["evaluate", "--data", "d.xyz", "--model", "m.pt", "--paper-scale", "--long-runs", "3",
                  "--track", "55,56,1.5", "--track", "50,52", "--option", "r_max=8", "--temperatures", "600,900"])
    o = options_from_args(args, timestep_fs=0.5)
    assert (o.rollout_steps, o.long_steps, o.long_runs, o.r_max) == (300, 200_000, 3, 8)  # flags beat paper scale
    assert [(p.i, p.j, p.threshold_A) for p in o.track] == [(55, 56, 1.5), (50, 52, None)]
    assert o.temperatures == [600.0, 900.0]
    assert options_from_args(parse(["evaluate", "--data", "d", "--model", "m"])) == EvalOptions()
    with pytest.raises(ValueError, match="KEY=VALUE"):
        options_from_args(parse(["evaluate", "--data", "d", "--model", "m", "--option", "nonsense=1"]))
    with pytest.raises(ValueError, match="I,J or I,J,THRESHOLD_A"):
        options_from_args(parse(["evaluate", "--data", "d", "--model", "m", "--track", "1"]))


def test_option_values_are_typed() -> None:
    from longmd.cli import build_parser
    from longmd.evaluation.cli import options_from_args

    def options(*extra: str) -> EvalOptions:
        return options_from_args(build_parser().parse_args(["evaluate", "--data", "d", "--model", "m", *extra]))

    o = options("--option", "track=[[0, 1], [2, 3, 1.5]]", "--option", "r_max=1e1", "--option", "temperatures=[300]")
    assert o.track == [TrackedPair(0, 1), TrackedPair(2, 3, 1.5)] and o.r_max == 10.0 and o.temperatures == [300.0]
    with pytest.raises(ValueError, match="option r_max: expected float, got 'abc'"):
        options("--option", "r_max=abc")
    with pytest.raises(ValueError, match=r"option track\[0\]: expected TrackedPair, got \[0\]"):
        options("--option", "track=[[0]]")


def test_data_with_other_key_names(emt_data, tmp_path) -> None:
    import ase.io

    frames = ase.io.read(emt_data, index=":")
    for atoms in frames[:80]:  # two trajectories
        atoms.info["E_ref"] = atoms.get_potential_energy()
        atoms.arrays["F_ref"] = atoms.get_forces()
        atoms.info["run"] = atoms.info.pop("traj_id")
        atoms.calc = None
    data = tmp_path / "renamed.extxyz"
    ase.io.write(data, frames[:80])
    out = tmp_path / "eval"
    rc = main(["evaluate", "--data", str(data), "--model", EMT_SPEC, "--parts", "frames", "--frames", "4",
               "--energy-key", "E_ref", "--forces-key", "F_ref", "--traj-id-key", "run", "--out", str(out),
               "--no-progress"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["protocol"]["held_out"]) == ["renamed.extxyz::0", "renamed.extxyz::1"]
    assert metrics["models"]["EMT"]["frames"]["force_mae"] < 1e-5


def test_analysis_of_one_cell_gives_torch_no_read_only_arrays() -> None:
    import warnings

    from longmd.analysis.structure import distance_histogram

    rng = np.random.default_rng(0)
    positions = rng.uniform(0, 4, size=(3, 8, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch: "The given NumPy array is not writable"
        _, h = distance_histogram(positions, cell=4 * np.eye(3), pbc=True, r_max=2.0, n_bins=10)
    assert np.all(np.isfinite(h))


def test_structure_scores_are_judged_against_the_reference_noise_floor(trajectories, tmp_path) -> None:
    """The floor is the same score between independent reference samples (held-out trajectory 0 vs 1): the
    exact potential scores within it, a clearly wrong one above it; report.md shows both."""
    options = EvalOptions(long_steps=39, record_every=1, long_runs=2, **FAST)
    m = evaluate({"EMT": emt(), "LJ": wrong_lj()}, trajectories, tmp_path, test=[0, 1],
                 parts="stability", options=options)
    floor = m["reference"]["stability"]["noise_floor"]
    assert floor["hr_mae"] > 0 and floor["rdf_mae"] > 0  # two different trajectories differ
    ref, lj = m["models"]["EMT"]["stability"], m["models"]["LJ"]["stability"]
    assert ref["noise_floor"] == floor
    assert ref["within_noise"] == {"hr_mae": True, "hr_l1": True, "rdf_mae": True}
    assert lj["hr_mae"] > 2 * floor["hr_mae"] and lj["within_noise"]["hr_mae"] is False
    report = (tmp_path / "report.md").read_text()
    assert "reference (noise floor)" in report and "within noise" in report


def test_without_split_the_trajectories_a_model_was_trained_on_are_named(emt_data, trajectories, tmp_path,
                                                                        capsys) -> None:
    """A model file inside a run directory: evaluate without --split warns which trajectories it trained on."""
    run = tmp_path / "run"
    run.mkdir()
    split = split_by_trajectory(trajectories, 0.25, 0.25, seed=1)
    split.save(run / "split.json")
    save_model(wrong_lj(), run / "best.pt")
    args = ["evaluate", "--data", str(emt_data), "--model", str(run / "best.pt"), "--parts", "frames",
            "--frames", "4", "--no-progress", "--threads", "1"]
    assert main([*args, "--out", str(tmp_path / "eval")]) == 0
    warning = capsys.readouterr().err
    trained = [trajectories[t].name for t in sorted(set(split.subsets["train"]) | set(split.subsets["val"]))]
    assert "no --split given" in warning and all(name in warning for name in trained)
    assert f"--split {run / 'split.json'}" in warning
    assert main([*args, "--split", str(run / "split.json"), "--out", str(tmp_path / "eval2")]) == 0
    assert "no --split given" not in capsys.readouterr().err


def test_partial_rdfs_of_pairs_with_too_few_atom_pairs_are_skipped_and_listed() -> None:
    """Two Kr atoms make one Kr-Kr distance per frame: no structure, so its g(r) is skipped and named."""
    from types import SimpleNamespace

    from longmd.evaluation.parts.stability import pair_count, structure_of

    rng = np.random.default_rng(0)
    numbers = np.array([18] * 10 + [36] * 2)
    positions = rng.uniform(0, 8, size=(5, 12, 3))
    ctx = SimpleNamespace(opts=SimpleNamespace(r_max=4.0, n_bins=40))
    structure = structure_of([(positions, numbers, np.eye(3) * 8.0, np.array([True] * 3))], ctx, "bulk")
    assert structure["partial_skipped"] == {"Kr-Kr": 1}
    assert set(structure["partial"]) == {"Ar-Ar", "Ar-Kr"}
    assert pair_count(numbers, 18, 18) == 45 and pair_count(numbers, 18, 36) == 20
