"""simulate() checkpoints: a killed run resumes bit for bit, a finished run extends, wrong resumes are refused."""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
import pytest

from longmd.cli import main
from longmd.dynamics.simulate import simulate
from longmd.models.io import save_model
from longmd.models.lj import LennardJones
from test_simulate import cluster, collapsing, model

RUN = dict(timestep_fs=5.0, ensemble="langevin", temperature_K=30.0, replicas=2, seed=3, log_every=2, traj_every=5,
           checkpoint_every=10, progress=False)


class Killed(Exception):
    pass


class KilledAfter(LennardJones):
    """The test's LJ model (same parameters, so the same fingerprint), killed at its ``calls``-th evaluation."""

    def __init__(self, calls: int) -> None:
        super().__init__(epsilon=0.0104, sigma=3.4, cutoff=8.5, r_switch=7.0)
        self.calls_left = calls

    def forward(self, graph):
        self.calls_left -= 1
        if self.calls_left < 0:
            raise Killed
        return super().forward(graph)


def files(out: Path) -> dict[str, object]:
    """What a run leaves on disk, for exact comparison."""
    found = {"thermo.csv": (out / "thermo.csv").read_text()}
    for path in sorted(out.glob("*.extxyz")):
        found[path.name] = path.read_text()
    for path in sorted(out.glob("*.traj")):
        frames = ase.io.read(path, ":")
        found[path.name] = [(a.info.get("step"), a.positions.tolist(), a.get_momenta().tolist()) for a in frames]
    return found


def test_killed_run_resumes_bit_for_bit(tmp_path) -> None:
    reference = simulate(model(), cluster(), steps=30, out_dir=tmp_path / "ref", **RUN)
    with pytest.raises(Killed):  # 1 force call at step 0, then one per step: dies during step 25
        simulate(KilledAfter(25), cluster(), steps=30, out_dir=tmp_path / "run", **RUN)
    rows = (tmp_path / "run" / "thermo.csv").read_text().splitlines()
    assert rows[-1].startswith("24,")  # the killed run wrote past its last checkpoint (step 20)
    resumed = simulate(model(), cluster(), steps=30, out_dir=tmp_path / "run", resume=True, **RUN)
    assert files(tmp_path / "run") == files(tmp_path / "ref")
    for a, b in zip(resumed.final_atoms, reference.final_atoms, strict=True):
        np.testing.assert_array_equal(a.positions, b.positions)
        np.testing.assert_array_equal(a.get_momenta(), b.get_momenta())
    assert resumed.steps == 30 and resumed.status == ["ok", "ok"]


def test_a_finished_run_extends_with_more_steps(tmp_path) -> None:
    reference = simulate(model(), cluster(), steps=30, out_dir=tmp_path / "ref", **RUN)
    simulate(model(), cluster(), steps=20, out_dir=tmp_path / "run", **{**RUN, "checkpoint_every": 0})
    assert (tmp_path / "run" / "checkpoint.pt").is_file()  # the end of a run is always checkpointed
    extended = simulate(model(), cluster(), steps=30, out_dir=tmp_path / "run", resume=True, **RUN)
    assert files(tmp_path / "run") == files(tmp_path / "ref")
    np.testing.assert_array_equal(extended.state.positions.numpy(), reference.state.positions.numpy())


def test_stopped_replicas_stay_stopped_after_a_resume(tmp_path) -> None:
    kwargs = dict(timestep_fs=5.0, init_velocities="given", min_distance=2.8, log_every=1, progress=False)
    init = [cluster(30.0, seed=1), collapsing(), cluster(30.0, seed=2)]
    reference = simulate(model(), init, steps=50, out_dir=tmp_path / "ref", **kwargs)
    simulate(model(), init, steps=40, out_dir=tmp_path / "run", **kwargs)
    resumed = simulate(model(), init, steps=50, out_dir=tmp_path / "run", resume=True, **kwargs)
    assert resumed.status == reference.status == ["ok", "min_distance", "ok"]
    assert [s.message.split(" -> ")[0] for s in resumed.stopped] == [
        s.message.split(" -> ")[0] for s in reference.stopped]
    np.testing.assert_array_equal(resumed.final_atoms[1].positions, reference.final_atoms[1].positions)
    assert "stopped_001.extxyz" in resumed.files
    assert files(tmp_path / "run") == files(tmp_path / "ref")


def test_wrong_resumes_are_refused_with_the_reason(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no simulation checkpoint"):
        simulate(model(), cluster(), steps=10, out_dir=tmp_path, resume=True, **RUN)
    with pytest.raises(ValueError, match="needs the out_dir"):
        simulate(model(), cluster(), steps=10, resume=True, **RUN)
    simulate(model(), cluster(), steps=20, out_dir=tmp_path, **RUN)
    with pytest.raises(ValueError, match="timestep_fs: 5.0 in the checkpoint, 2.0 now"):
        simulate(model(), cluster(), steps=30, out_dir=tmp_path, resume=True, **{**RUN, "timestep_fs": 2.0})
    with pytest.raises(ValueError, match="model"):
        other = LennardJones(epsilon=0.02, sigma=3.4, cutoff=8.5, r_switch=7.0)
        simulate(other, cluster(), steps=30, out_dir=tmp_path, resume=True, **RUN)
    with pytest.raises(ValueError, match="at step 20, beyond steps=10"):
        simulate(model(), cluster(), steps=10, out_dir=tmp_path, resume=True, **RUN)
    checkpoint = tmp_path / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])  # a file cut short
    with pytest.raises(ValueError, match="not a readable simulation checkpoint"):
        simulate(model(), cluster(), steps=30, out_dir=tmp_path, resume=True, **RUN)


def test_cli_resume_extends_a_run(tmp_path, capsys) -> None:
    save_model(model(), tmp_path / "lj.pt")
    ase.io.write(tmp_path / "init.extxyz", cluster())
    common = [str(tmp_path / "lj.pt"), str(tmp_path / "init.extxyz"), "--timestep-fs", "5", "--log-every", "2",
              "--checkpoint-every", "4", "--out", str(tmp_path / "md"), "--no-progress"]
    assert main(["simulate", *common, "--steps", "6"]) == 0
    assert main(["simulate", *common, "--steps", "10", "--resume"]) == 0
    assert "10 of 10 steps" in capsys.readouterr().out
    steps = [int(line.split(",")[0]) for line in (tmp_path / "md" / "thermo.csv").read_text().splitlines()[1:]]
    assert steps == [0, 2, 4, 6, 8, 10]


STOPS = dict(timestep_fs=5.0, init_velocities="given", min_distance=2.8, log_every=1, progress=False)


def test_a_run_whose_replicas_all_stopped_resumes(tmp_path) -> None:
    first = simulate(model(), [collapsing()], steps=50, out_dir=tmp_path, **STOPS)
    assert first.status == ["min_distance"]
    again = simulate(model(), [collapsing()], steps=60, out_dir=tmp_path, resume=True, **STOPS)
    assert again.status == ["min_distance"] and again.replicas == [] and again.steps == first.steps
    assert again.stopped[0].message == first.stopped[0].message


def test_frames_after_the_checkpoint_go_even_a_stopped_replicas(tmp_path) -> None:
    init = [cluster(30.0, seed=1), collapsing(), cluster(30.0, seed=2)]  # replica 1 stops at step 10
    with pytest.raises(Killed):
        simulate(KilledAfter(12), init, steps=40, out_dir=tmp_path, checkpoint_every=8, **STOPS)
    assert (tmp_path / "stopped_001.extxyz").is_file()
    resumed = simulate(model(), init, steps=9, out_dir=tmp_path, resume=True, checkpoint_every=8, **STOPS)
    assert resumed.status == ["ok", "ok", "ok"] and not (tmp_path / "stopped_001.extxyz").exists()
    reference = simulate(model(), init, steps=9, out_dir=tmp_path / "ref", checkpoint_every=8, **STOPS)
    assert files(tmp_path) == files(tmp_path / "ref") and sorted(resumed.files) == sorted(reference.files)


def test_an_empty_traj_of_a_hard_kill_resumes(tmp_path) -> None:
    """ASE writes nothing to a .traj before its first frame: a replica stopped at step 0 leaves 0 bytes."""
    init = [cluster(30.0, seed=1), cluster(300.0, seed=2)]  # replica 1 is above max_temperature_K at step 0
    kwargs = dict(timestep_fs=5.0, init_velocities="given", max_temperature_K=100.0, traj_every=1, progress=False)
    with pytest.raises(Killed):
        simulate(KilledAfter(8), init, steps=20, out_dir=tmp_path, checkpoint_every=4, **kwargs)
    (tmp_path / "traj_001.traj").write_bytes(b"")  # what SIGKILL leaves
    resumed = simulate(model(), init, steps=20, out_dir=tmp_path, resume=True, checkpoint_every=4, **kwargs)
    assert resumed.status == ["ok", "temperature"]
    assert len(ase.io.read(tmp_path / "traj_000.traj", ":")) == 21


def test_a_new_run_removes_an_old_checkpoint_and_foreign_files_are_refused(tmp_path) -> None:
    simulate(model(), cluster(), steps=30, out_dir=tmp_path, **RUN)
    with pytest.raises(Killed):  # a new run in the same folder, killed before its first checkpoint
        simulate(KilledAfter(5), cluster(), steps=30, out_dir=tmp_path, **RUN)
    with pytest.raises(FileNotFoundError, match="no simulation checkpoint"):
        simulate(model(), cluster(), steps=40, out_dir=tmp_path, resume=True, **RUN)
    simulate(model(), cluster(), steps=20, out_dir=tmp_path, **RUN)
    (tmp_path / "thermo.csv").write_text("step\n")  # files that are not those of the checkpoint
    with pytest.raises(ValueError, match="fewer than the .* of its checkpoint"):
        simulate(model(), cluster(), steps=30, out_dir=tmp_path, resume=True, **RUN)
