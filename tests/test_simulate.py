"""simulate(): files written, Maxwell-Boltzmann start, and blow-ups that stop one replica while others go on."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.cluster import Icosahedron

from longmd.cli import main
from longmd.dynamics.cores import ForceField
from longmd.dynamics.failures import MinDistance
from longmd.dynamics.neighbor_policy import VerletNeighbors
from longmd.dynamics.simulate import seed_streams, simulate
from longmd.dynamics.state import MDState
from longmd.models.egnn import egnn_potential
from longmd.models.io import save_model
from longmd.models.lj import LennardJones


def cluster(temperature_K: float = 0.0, seed: int = 0) -> Atoms:
    atoms = Icosahedron("Ar", 2)
    atoms.center(vacuum=5.0)
    if temperature_K:
        rng = np.random.default_rng(seed)
        p = rng.normal(size=(len(atoms), 3)) * np.sqrt(atoms.get_masses()[:, None] * 8.617e-5 * temperature_K)
        atoms.set_momenta(p - atoms.get_masses()[:, None] * p.sum(0) / atoms.get_masses().sum())
    return atoms


def collapsing() -> Atoms:
    """Atom 1 is thrown at the central atom 0 with ~1 eV: they come far closer than Ar atoms ever do at 30 K."""
    atoms = cluster(30.0, seed=9)
    direction = atoms.positions[0] - atoms.positions[1]
    p = atoms.get_momenta()
    p[1] += np.sqrt(2 * 39.95 * 1.0) * direction / np.linalg.norm(direction)
    atoms.set_momenta(p)
    return atoms


def model() -> LennardJones:
    return LennardJones(epsilon=0.0104, sigma=3.4, cutoff=8.5, r_switch=7.0)


def test_simulate_writes_log_trajectories_and_plot(tmp_path) -> None:
    result = simulate(model(), cluster(), steps=20, timestep_fs=5.0, ensemble="langevin", temperature_K=30.0,
                      out_dir=tmp_path, log_every=5, traj_every=10, replicas=2, seed=1, progress=False)
    with open(tmp_path / "thermo.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["step", "time_fs", "replica", "E_pot_eV", "E_kin_eV", "E_tot_eV", "T_K", "T_Ar_K"]
    # one species under Langevin: its temperature is T itself (3N degrees of freedom, lab frame)
    assert float(rows[-1]["T_Ar_K"]) == pytest.approx(float(rows[-1]["T_K"]), rel=1e-6)
    assert [(int(r["step"]), int(r["replica"])) for r in rows] == [(s, b) for s in range(0, 21, 5) for b in (0, 1)]
    row = rows[-1]
    assert float(row["time_fs"]) == 100.0
    assert abs(float(row["E_pot_eV"]) + float(row["E_kin_eV"]) - float(row["E_tot_eV"])) < 1e-8
    for r in range(2):
        frames = ase.io.read(tmp_path / f"traj_{r:03d}.extxyz", index=":")
        assert [f.info["step"] for f in frames] == [0, 10, 20]
        assert frames[-1].get_momenta().any() and "forces" in frames[-1].calc.results
        traj = ase.io.read(tmp_path / f"traj_{r:03d}.traj", index=":")
        np.testing.assert_allclose(traj[-1].positions, frames[-1].positions, atol=1e-6)
        np.testing.assert_allclose(frames[-1].positions, result.final_atoms[r].positions, atol=1e-6)
    assert (tmp_path / "thermo.png").stat().st_size > 1000
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps"] == 20 and summary["stopped"] == [] and summary["status"] == ["ok", "ok"]
    trajectories = [f"traj_{r:03d}.{ext}" for r in (0, 1) for ext in ("extxyz", "traj")]
    names = {"thermo.csv", "thermo.png", "summary.json", *trajectories}
    assert set(result.files) == names and all(Path(p).is_file() for p in result.files.values())
    # Replicas drew different Maxwell-Boltzmann velocities (the structure had none) near 30 K.
    assert not np.allclose(result.final_atoms[0].positions, result.final_atoms[1].positions)
    t0 = [float(r["T_K"]) for r in rows[:2]]
    assert all(10.0 < t < 60.0 for t in t0), t0
    assert result.steps == 20 and result.steps_completed == [20, 20] and result.status == ["ok", "ok"]
    assert result.steps_per_s > 0 and result.ns_per_day > 0 and "2 of 2 replica(s)" in result.summary()


def test_collapsing_replica_stops_and_the_others_go_on(tmp_path) -> None:
    good = [cluster(30.0, seed=1), cluster(30.0, seed=2)]
    kwargs = dict(steps=40, timestep_fs=5.0, init_velocities="given", min_distance=2.8, progress=False)
    result = simulate(model(), [good[0], collapsing(), good[1]], out_dir=tmp_path, log_every=1, **kwargs)
    assert [s.replica for s in result.stopped] == [1] and result.replicas == [0, 2]
    stop = result.stopped[0]
    assert stop.reason == "min_distance" and 0 < stop.step < 40
    assert f"replica 1 stopped at step {stop.step}" in stop.message and "Å apart" in stop.message
    # The kept frame is the last good one: the step before, with no pair closer than the threshold.
    saved = ase.io.read(tmp_path / "stopped_001.extxyz")
    assert saved.get_all_distances()[np.triu_indices(len(saved), 1)].min() >= 2.8
    np.testing.assert_allclose(saved.positions, result.final_atoms[1].positions, atol=1e-6)
    with open(tmp_path / "thermo.csv") as fh:
        rows = list(csv.DictReader(fh))
    steps_of = {r: [int(x["step"]) for x in rows if int(x["replica"]) == r] for r in range(3)}
    assert steps_of[1] == list(range(stop.step)) and steps_of[0] == steps_of[2] == list(range(41))
    assert result.status == ["ok", "min_distance", "ok"] and result.steps_completed == [40, stop.step - 1, 40]
    assert result.files["stopped_001.extxyz"] == str(tmp_path / "stopped_001.extxyz")
    # Survivors follow exactly the trajectories they have without the collapsing replica.
    alone = simulate(model(), good, out_dir=None, **kwargs)
    for kept, ref in zip([result.final_atoms[0], result.final_atoms[2]], alone.final_atoms, strict=True):
        np.testing.assert_allclose(kept.positions, ref.positions, rtol=0, atol=1e-10)
        np.testing.assert_allclose(kept.get_momenta(), ref.get_momenta(), rtol=0, atol=1e-10)


def test_temperature_bound_and_nan_stop_replicas() -> None:
    hot = simulate(model(), [cluster(30.0, seed=1), collapsing()], steps=5, timestep_fs=5.0, init_velocities="given",
                   max_temperature_K=300.0, progress=False)
    assert [(s.replica, s.reason, s.step) for s in hot.stopped] == [(1, "temperature", 0)]
    assert "initial frame" in hot.stopped[0].message

    class NaNForSecond(LennardJones):
        """NaN energy and forces in system 1 only."""

        def forward(self, graph):
            poison = torch.where(graph.system == 1, float("nan"), 0.0).to(graph.positions.dtype)
            extra = (graph.positions * poison[:, None]).sum(-1)
            return super().forward(graph).index_add(0, graph.system, extra)

    bad = simulate(NaNForSecond(r_switch=7.0), [cluster(30.0), cluster(30.0)], steps=3, timestep_fs=5.0,
                   progress=False)
    assert [(s.replica, s.reason) for s in bad.stopped] == [(1, "nan")] and bad.replicas == [0]


def test_simulate_accepts_a_state_and_replicates_it() -> None:
    state = MDState.from_atoms([cluster(30.0)])
    result = simulate(model(), state, steps=3, timestep_fs=5.0, replicas=3, progress=False)
    assert result.state.n_systems == 3 and len(result.final_atoms) == 3
    np.testing.assert_allclose(result.final_atoms[0].positions, result.final_atoms[2].positions, atol=1e-12)
    with pytest.raises(ValueError, match="init_velocities"):
        simulate(model(), state, steps=1, init_velocities="random", progress=False)


def test_mdstate_atoms_round_trip_and_select() -> None:
    atoms = [cluster(30.0, seed=1), Atoms("Ar2", positions=[[0, 0, 0], [3.8, 0, 0]], cell=[9, 9, 9], pbc=True)]
    state = MDState.from_atoms(atoms)
    back = state.to_atoms()
    for a, b in zip(atoms, back, strict=True):
        np.testing.assert_allclose(a.positions, b.positions)
        np.testing.assert_allclose(a.get_momenta(), b.get_momenta())
        assert (a.pbc == b.pbc).all() and np.allclose(a.cell.array, b.cell.array)
    picked = state.select([1, 0])
    assert picked.atoms_per_system().tolist() == [2, 13] and picked.system.tolist() == [0, 0] + [1] * 13
    torch.testing.assert_close(picked.positions[:2], state.positions[13:])


def test_default_temperature_bound_is_ten_times_the_target() -> None:
    """The collapsing cluster starts at ~650 K: below 5000 K (NVE, no target), above 10 x 30 K (Langevin)."""
    nve = simulate(model(), collapsing(), steps=1, timestep_fs=1.0, init_velocities="given", min_distance=0.1,
                   progress=False)
    hot = simulate(model(), collapsing(), steps=1, timestep_fs=1.0, ensemble="langevin", temperature_K=30.0,
                   init_velocities="given", progress=False)
    assert nve.status == ["ok"]
    assert hot.status == ["temperature"] and "> 300 K" in hot.stopped[0].message and hot.steps_completed == [0]


def test_nonfinite_positions_stop_their_replica_only() -> None:
    broken = cluster(30.0)
    broken.positions[3] = [np.nan, 0.0, np.inf]
    result = simulate(model(), [cluster(30.0, seed=1), broken, cluster(30.0, seed=2)], steps=4, timestep_fs=5.0,
                      init_velocities="given", progress=False)
    assert [(s.replica, s.reason, s.step) for s in result.stopped] == [(1, "nan", 0)]
    assert result.replicas == [0, 2] and result.steps == 4 and result.status == ["ok", "nan", "ok"]
    # The guarded Verlet list searches a broken system as far-apart atoms: no pairs, the others untouched.
    state = MDState.from_atoms([cluster(), broken])
    guarded = VerletNeighbors(8.5, 1.0, isolate_nonfinite=True)
    edge_index, _ = guarded.edges(0, state)
    assert edge_index.shape[1] == 13 * 12 and int(edge_index.max()) < 13


def test_min_distance_is_exact_below_the_threshold() -> None:
    state = MDState.from_atoms([cluster(30.0), Atoms("Ar2", positions=[[0, 0, 0], [2.0, 0, 0]], cell=[9, 9, 9],
                                                          pbc=True)])
    neighbors = VerletNeighbors(8.5, 1.0)
    ForceField(model(), neighbors)(state)
    exact = MinDistance(neighbors)(state)
    brute = cluster(30.0).get_all_distances()[np.triu_indices(13, 1)].min()
    assert float(exact[0]) == pytest.approx(brute) and float(exact[1]) == pytest.approx(2.0)
    close = MinDistance(neighbors, reach=2.5)(state)  # only pairs within 2.5 Å at the build are followed
    assert float(close[0]) == float("inf") and float(close[1]) == pytest.approx(2.0)


def test_stale_cached_forces_are_not_used() -> None:
    state = MDState.from_atoms([cluster(30.0)])
    fresh = simulate(model(), state, steps=3, timestep_fs=5.0, progress=False)
    stale = state.replace(forces=torch.full_like(state.positions, 5.0), energy=torch.zeros(1, dtype=torch.float64))
    again = simulate(model(), stale, steps=3, timestep_fs=5.0, progress=False)
    np.testing.assert_array_equal(again.final_atoms[0].positions, fresh.final_atoms[0].positions)


def test_dtype_casts_a_copy_and_leaves_the_callers_model_alone() -> None:
    egnn = egnn_potential([18], hidden=8, n_rff=8, n_layers=1, cutoff=5.0).to(torch.float32)
    before = {k: v.clone() for k, v in egnn.state_dict().items()}
    result = simulate(egnn, cluster(30.0), steps=2, timestep_fs=2.0, dtype=torch.float64, progress=False)
    assert result.state.dtype == torch.float64 and result.status == ["ok"]
    after = egnn.state_dict()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())
    lj = model()
    assert simulate(lj, cluster(30.0), steps=1, dtype=torch.float32, progress=False).state.dtype == torch.float32
    assert lj.epsilon.dtype == torch.float64


def test_seed_streams_are_independent() -> None:
    seeds = [s for k in range(20) for s in seed_streams(k)]
    assert len(set(seeds)) == 40 and seed_streams(3) == seed_streams(3)
    runs = [simulate(model(), cluster(), steps=2, timestep_fs=5.0, ensemble="svr", temperature_K=30.0, seed=k,
                     progress=False).final_atoms[0].get_momenta() for k in (0, 0, 1)]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.allclose(runs[0], runs[2])


def test_cli_simulate_end_to_end(tmp_path, capsys) -> None:
    save_model(model(), tmp_path / "lj.pt")
    ase.io.write(tmp_path / "init.extxyz", cluster())
    out = tmp_path / "md"
    code = main(["simulate", str(tmp_path / "lj.pt"), str(tmp_path / "init.extxyz"), "--steps", "6",
                 "--timestep-fs", "5", "--ensemble", "langevin", "--temperature-K", "30", "--replicas", "2",
                 "--log-every", "2", "--traj-every", "3", "--dtype", "float32", "--out", str(out), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "2 of 2 replica(s) ran to the end" in printed and f"results in {out}" in printed
    with open(out / "thermo.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(int(r["step"]), int(r["replica"])) for r in rows] == [(s, b) for s in (0, 2, 4, 6) for b in (0, 1)]
    for r in range(2):
        assert [f.info["step"] for f in ase.io.read(out / f"traj_{r:03d}.extxyz", ":")] == [0, 3, 6]
        assert len(ase.io.read(out / f"traj_{r:03d}.traj", ":")) == 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == ["ok", "ok"] and summary["steps"] == 6 and (out / "thermo.png").is_file()
    assert main(["simulate", str(tmp_path / "missing.pt"), str(tmp_path / "init.extxyz")]) == 2


def _read_first_frames(out: Path, replicas: int) -> list[Atoms]:
    return [ase.io.read(out / f"traj_{r:03d}.extxyz", 0) for r in range(replicas)]


def test_cli_takes_timestep_frame_and_fresh_velocities_from_the_structure(tmp_path, capsys) -> None:
    """The file's timestep_fs is used (--timestep-fs overrides), FILE@0 picks a frame, and
    --init-velocities maxwell-boltzmann gives every replica its own seeded momenta at the temperature."""
    save_model(model(), tmp_path / "lj.pt")
    frames = [cluster(30.0, seed=k) for k in range(3)]
    for k, f in enumerate(frames):
        f.positions += 0.01 * k
        f.info["timestep_fs"] = 1.0
    init = tmp_path / "init.extxyz"
    ase.io.write(init, frames)
    common = ["--steps", "2", "--replicas", "4", "--traj-every", "1", "--no-progress", "--temperature-K", "300"]

    def run(out: str, *extra: str) -> tuple[dict, list[Atoms]]:
        assert main(["simulate", str(tmp_path / "lj.pt"), *extra, *common, "--out", str(tmp_path / out)]) == 0
        return json.loads((tmp_path / out / "summary.json").read_text()), _read_first_frames(tmp_path / out, 4)

    summary, kept = run("keep", f"{init}@0")
    assert summary["timestep_fs"] == 1.0 and "timestep 1 fs (timestep_fs of" in capsys.readouterr().out
    for atoms in kept:  # the default keeps the structure's momenta: four identical starts from frame 0
        np.testing.assert_allclose(atoms.positions, frames[0].positions, atol=1e-6)
        np.testing.assert_allclose(atoms.get_momenta(), frames[0].get_momenta(), atol=1e-6)

    summary, fresh = run("fresh", f"{init}@0", "--init-velocities", "maxwell-boltzmann", "--timestep-fs", "2")
    assert summary["timestep_fs"] == 2.0 and "overriding timestep_fs=1.0" in capsys.readouterr().out
    momenta = np.array([a.get_momenta() for a in fresh])
    for r in range(4):
        assert not np.allclose(momenta[r], frames[0].get_momenta(), atol=1e-3)
        assert all(not np.allclose(momenta[r], momenta[q], atol=1e-3) for q in range(r))
        np.testing.assert_allclose(momenta[r].sum(0), 0.0, atol=1e-6)  # no centre-of-mass drift
    masses = fresh[0].get_masses()[None, :, None]
    temperature = (momenta**2 / masses).sum() / (3 * momenta.shape[1] - 3) / 4 / 8.617333e-5
    assert 200 < temperature < 400  # 4 x 36 degrees of freedom at 300 K: a spread of about 12 %
    _, again = run("again", f"{init}@0", "--init-velocities", "maxwell-boltzmann")
    np.testing.assert_allclose(np.array([a.get_momenta() for a in again]), momenta, atol=1e-6)  # seeded

    assert main(["simulate", str(tmp_path / "lj.pt"), f"{init}@:2", "--out", str(tmp_path / "bad")]) == 2
    assert "index ':2' selects several frames; a structure needs one" in capsys.readouterr().err
