"""What a new user trips over (issue 13): crashes, traps, run directories, threads, logs, clear errors."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from longmd.cli import main

SRC = str(Path(__file__).resolve().parents[1] / "src")
TINY = ["--set", "training.max_epochs=1", "--set", "training.windows_per_epoch=2", "--set", "training.batch_size=2",
        "--set", "training.val_windows=1", "--set", "training.val_length=3", "--set", "training.progress=false"]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m longmd ARGS`` in a fresh interpreter (nothing imported beforehand)."""
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "longmd", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=600)


@pytest.mark.skipif(importlib.util.find_spec("mace") is None, reason="needs mace-torch")
def test_mace_trains_from_a_fresh_interpreter(tmp_path) -> None:
    out = tmp_path / "run"
    done = run_cli("train", "demo", "--out", str(out), "--set", "model.name=mace",
                   "--set", "model.options={channels: 4, max_L: 0, correlation: 1}", *TINY)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Weights only load failed" not in done.stderr and (out / "best.pt").exists()


def test_atomic_writes_respect_the_umask(tmp_path) -> None:
    from longmd.atomic import atomic_write_text

    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "a.json", "{}")
        os.umask(0o077)
        private = atomic_write_text(tmp_path / "b.json", "{}")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    assert private.stat().st_mode & 0o777 == 0o600


def test_threads_default_is_sized_by_the_system_and_idle_cpus(monkeypatch) -> None:
    from longmd import runtime

    monkeypatch.setattr(runtime, "_available_cpus", lambda: 64)
    monkeypatch.setattr(runtime.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert runtime.choose_threads(None, 57)[0] == 1  # a 57-atom system never takes a 64-core node
    assert runtime.choose_threads(None, 8000)[0] == 16
    monkeypatch.setattr(runtime, "_available_cpus", lambda: 2)
    monkeypatch.setattr(runtime.os, "getloadavg", lambda: (3.5, 3.0, 3.0))  # a loaded 2-core box
    threads, why = runtime.choose_threads(None, 8000)
    assert threads == 1 and "idle" in why
    assert runtime.choose_threads(3, 57) == (3, "as requested")
    with pytest.raises(ValueError, match="--threads"):
        runtime.choose_threads(0)


@pytest.mark.parametrize("command", ["train", "simulate", "evaluate", "lammps", "demo"])
def test_every_command_takes_threads(command, capsys) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert "--threads" in capsys.readouterr().out


def _tiny_train(emt_data, out, *extra: str) -> list[str]:
    return ["train", "--out", str(out), "--set", f"data.paths=[{emt_data}]", "--set", "data.split=time_blocks",
            "--set", "data.val_fraction=0.25", "--set", "data.test_fraction=0.25",
            "--set", "model.options={hidden: 8, n_rff: 8, n_layers: 1}", "--set", "training.s_max=1",
            "--set", "training.max_epochs_per_s=1", *TINY[2:], *extra]


def test_train_logs_its_threads_and_cli_errors_are_one_line(emt_data, tmp_path, capsys) -> None:
    import torch

    out = tmp_path / "run"
    assert main([*_tiny_train(emt_data, out), "--threads", "1"]) == 0
    assert "torch CPU threads: 1 (as requested)" in capsys.readouterr().out
    (out / "checkpoint.pt").write_bytes((out / "checkpoint.pt").read_bytes()[:100])  # truncated by a full disk
    assert main([*_tiny_train(emt_data, out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "checkpoint.pt is unreadable" in err and err.count("\n") == 1
    bad = tmp_path / "bad"
    assert main([*_tiny_train(emt_data, bad), "--set", "model.options.foo=3"]) == 2
    assert "model.options.foo: not an option of egnn" in capsys.readouterr().err
    if not torch.cuda.is_available():
        cuda = tmp_path / "cuda"
        assert main([*_tiny_train(emt_data, cuda), "--device", "cuda"]) == 2
        assert "no CUDA device" in capsys.readouterr().err and not cuda.exists()


@pytest.mark.parametrize("command", ["train", "simulate", "evaluate"])
@pytest.mark.parametrize("kind", ["read-only", "under a file"])
def test_unwritable_out_is_one_line(emt_data, tmp_path, capsys, command, kind) -> None:
    model = _lj_model(tmp_path)
    if kind == "read-only" and os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    locked = tmp_path / "locked"
    if kind == "read-only":
        locked.mkdir()
        locked.chmod(0o500)
    else:
        locked.write_text("")  # NotADirectoryError: an OSError like PermissionError
    out = str(locked / "run")
    argv = {"train": _tiny_train(emt_data, out),
            "simulate": ["simulate", str(model), str(emt_data), "--steps", "2", "--out", out],
            "evaluate": ["evaluate", "--data", str(emt_data), "--model", str(model), "--parts", "frames",
                         "--frames", "2", "--out", out]}[command]
    try:
        assert main(argv) == 2
    finally:
        if locked.is_dir():
            locked.chmod(0o700)
    err = capsys.readouterr().err
    assert "error:" in err and "locked" in err and err.count("\n") == 1


def _lj_model(tmp_path) -> Path:
    from longmd.models.io import save_model
    from longmd.models.lj import LennardJones

    path = tmp_path / "lj.pt"
    save_model(LennardJones(epsilon=0.01, sigma=2.3, cutoff=5.0), path)
    return path


@pytest.mark.parametrize("option", ["--friction-per-fs=-1", "--timestep-fs=0", "--tau-fs=-5", "--replicas=0",
                                    "--temperature-K=-300", "--skin=-1"])
def test_simulate_checks_physical_values_up_front(tmp_path, capsys, option) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["simulate", "m.pt", "i.xyz", option, "--out", str(tmp_path / "sim")])
    assert exit_info.value.code == 2 and "must be" in capsys.readouterr().err and not (tmp_path / "sim").exists()


def test_simulate_fails_when_every_replica_stops_at_step_0(emt_data, tmp_path, capsys) -> None:
    model = _lj_model(tmp_path)
    argv = ["simulate", str(model), str(emt_data), "--steps", "3", "--replicas", "2", "--no-progress"]
    assert main([*argv, "--min-distance", "50", "--out", str(tmp_path / "bad")]) == 1  # every pair is "too close"
    assert "every replica stopped at step 0" in capsys.readouterr().err
    assert main([*argv, "--out", str(tmp_path / "good")]) == 0


def test_redirected_logs_get_lines_not_bars(emt_data, tmp_path) -> None:
    model = _lj_model(tmp_path)
    done = run_cli("simulate", str(model), str(emt_data), "--steps", "40", "--out", str(tmp_path / "sim"),
                   "--threads", "1")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "\r" not in done.stderr + done.stdout and "it/s" not in done.stderr  # no tqdm bar in a file
    lines = [line for line in done.stdout.splitlines() if line.startswith("MD: ")]
    assert len(lines) == 20 and lines[-1].startswith("MD: 40/40 step")
    train = run_cli(*_tiny_train(emt_data, tmp_path / "run")[:-2], "--set", "training.progress=true")
    assert train.returncode == 0, train.stderr[-2000:]
    assert "\r" not in train.stderr and "epoch    0  S=1" in train.stdout


def test_resuming_a_finished_run_does_nothing_unless_a_cap_is_raised(emt_data, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    argv = [a for a in _tiny_train(emt_data, out) if a != "training.max_epochs=1"]
    argv = [a for i, a in enumerate(argv) if not (a == "--set" and argv[i + 1:i + 2] == ["training.max_epochs=1"])]
    assert main(argv) == 0  # S=1 stops after max_epochs_per_s=1: finished
    capsys.readouterr()
    files = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir() if p.is_file()}
    assert main([*argv, "--resume"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir() if p.is_file()} == files
    assert main([*argv, "--set", "training.max_epochs_per_s=2", "--resume"]) == 0  # the cap that applied, raised
    assert torch_load_epochs(out) == 2
    assert main([*argv, "--set", "training.max_epochs_per_s=2", "--set", "training.s_max=2", "--resume"]) == 0
    log = capsys.readouterr().out
    assert "epoch    2  S=2" in log and torch_load_epochs(out) == 4


def torch_load_epochs(out: Path) -> int:
    import torch

    return int(torch.load(out / "checkpoint.pt", weights_only=True)["epoch"])


def test_out_holding_an_earlier_run_is_refused_or_replaced(emt_data, tmp_path, capsys) -> None:
    model = _lj_model(tmp_path)
    sim = tmp_path / "sim"
    argv = ["simulate", str(model), str(emt_data), "--steps", "2", "--no-progress", "--threads", "1", "--out", str(sim)]
    assert main([*argv, "--replicas", "3"]) == 0
    mine = sim / "notes.txt"
    mine.write_text("not longmd's")
    before = (sim / "thermo.csv").read_bytes()
    assert main(argv) == 2
    assert "holds an earlier simulate run" in capsys.readouterr().err and (sim / "thermo.csv").read_bytes() == before
    assert main([*argv, "--overwrite"]) == 0
    assert not (sim / "traj_002.extxyz").exists() and (sim / "traj_000.extxyz").exists()  # no old replica left
    assert mine.read_text() == "not longmd's"  # only what simulate writes is cleared

    run = tmp_path / "run"
    assert main(_tiny_train(emt_data, run)) == 0
    (run / "best_S2.pt").write_bytes(b"old")
    assert main(_tiny_train(emt_data, run)) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*_tiny_train(emt_data, run), "--overwrite"]) == 0 and not (run / "best_S2.pt").exists()

    ev = tmp_path / "ev"
    eval_argv = ["evaluate", "--data", str(emt_data), "--model", str(model), "--parts", "frames", "--frames", "2",
                 "--no-progress", "--threads", "1", "--out", str(ev)]
    assert main(eval_argv) == 0
    (ev / "parity_old.png").write_bytes(b"old")
    assert main(eval_argv) == 2
    assert main([*eval_argv, "--resume"]) == 0
    assert main([*eval_argv, "--overwrite"]) == 0 and not (ev / "parity_old.png").exists()
