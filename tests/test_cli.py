"""The command line: commands answer, errors are one clear line, train writes a run directory."""

from __future__ import annotations

import numpy as np
import pytest

from longmd.cli import main


def test_config_lists_every_key(capsys) -> None:
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "rollout_gradient: full" in out and "# " in out


def test_info_summarises_a_dataset(emt_data, capsys) -> None:
    assert main(["info", str(emt_data)]) == 0
    out = capsys.readouterr().out
    assert "4 trajectories, 160 frames" in out and "32 atoms" in out


def test_errors_are_one_clear_line(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  smax: 3\n")
    assert main(["train", str(bad), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'training.smax'" in err and str(bad) in err and "Traceback" not in err
    assert main(["info", str(tmp_path / "missing.xyz")]) == 2
    assert "missing.xyz" in capsys.readouterr().err


def test_train_command_with_overrides(emt_data, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    code = main([
        "train", "--out", str(out), "--set", f"data.paths=[{emt_data}]", "--set", "data.split=time_blocks",
        "--set", "data.val_fraction=0.25", "--set", "data.test_fraction=0.25",
        "--set", "model.options={hidden: 8, n_rff: 8, n_layers: 1}", "--set", "training.s_max=2",
        "--set", "training.max_epochs_per_s=1", "--set", "training.val_length=5", "--set", "training.val_windows=1",
        "--set", "training.windows_per_epoch=4", "--set", "training.batch_size=4", "--set", "training.progress=false",
    ])
    assert code == 0
    assert (out / "best.pt").exists() and (out / "best_S2.pt").exists()
    assert "results in" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["train", "simulate", "evaluate", "datagen", "demo"])
def test_help_of_every_command(command, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0


def test_packaged_configs_by_name(tmp_path, monkeypatch) -> None:
    from longmd.config import ConfigError, load_config

    monkeypatch.chdir(tmp_path)
    assert load_config("paper").model.preset == "paper"
    assert load_config("demo", ["training.s_max=2"]).training.s_max == 2
    (tmp_path / "demo").write_text("training:\n  s_max: 7\n")  # a file of that name wins
    assert load_config("demo").training.s_max == 7
    with pytest.raises(ConfigError, match="nosuch"):
        load_config("nosuch")


def test_set_override_errors_name_the_override(tmp_path, capsys) -> None:
    assert main(["train", "demo", "--set", "training.lr=fast", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "override 'training.lr=fast': training.lr: expected float" in err and err.count("\n") == 1


def _init_file(tmp_path, bad_key: str | None = None):
    """A Cu cell with momenta; ``bad_key`` (positions, cell, momenta) gets a non-finite entry."""
    import ase.io
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    atoms.set_momenta(np.zeros((len(atoms), 3)))
    if bad_key == "cell":
        atoms.cell.array[0, 0] = np.inf
    elif bad_key:
        atoms.arrays[bad_key][0, 0] = np.nan
    path = tmp_path / "init.extxyz"
    ase.io.write(path, atoms)
    return path


@pytest.mark.parametrize("bad_key", [None, "positions", "cell", "momenta"])
def test_simulate_rejects_bad_init_files(tmp_path, capsys, bad_key) -> None:
    path = _init_file(tmp_path, bad_key)
    if bad_key is None:
        path.write_text("2\n\nH 0 0\n")  # unreadable
    assert main(["simulate", str(tmp_path / "model.pt"), str(path), "--out", str(tmp_path / "md")]) == 2
    err = capsys.readouterr().err
    expected = "cannot read (XYZError" if bad_key is None else f"last frame: key '{bad_key}': contains NaN or inf"
    assert f"init.extxyz: {expected}" in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("command", [["evaluate", "--data", "d.xyz", "--model", "m.pt"], ["simulate", "m.pt", "i.xyz"]])
def test_device_is_checked(tmp_path, capsys, command) -> None:
    import torch

    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--device", "gpu"])
    assert exit_info.value.code == 2 and "expected cpu, cuda or cuda:N, got 'gpu'" in capsys.readouterr().err
    device = "cuda:99" if torch.cuda.is_available() else "cuda"
    assert main([*command, "--device", device, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"--device {device}:" in err and "CUDA device" in err and err.count("\n") == 1


def test_info_takes_a_timestep(tmp_path, capsys) -> None:
    import ase.io
    from ase.build import bulk
    from ase.calculators.singlepoint import SinglePointCalculator

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    atoms.set_momenta(np.zeros((len(atoms), 3)))
    atoms.calc = SinglePointCalculator(atoms, energy=-1.0, forces=np.zeros((len(atoms), 3)))
    path = tmp_path / "nodt.extxyz"
    ase.io.write(path, [atoms, atoms])
    assert main(["info", str(path)]) == 2
    assert "no timestep in the file" in capsys.readouterr().err
    assert main(["info", str(path), "--timestep-fs", "0.5"]) == 0
    assert "2 frames x 0.5 fs" in capsys.readouterr().out


def test_help_shows_every_default() -> None:
    """Every option of every command says its default in --help (flags, required and repeatable ones aside)."""
    import argparse

    from longmd.cli import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    silent = []
    for name, command in sub.choices.items():
        formatter = command._get_formatter()
        for action in command._actions:
            if action.required or isinstance(action, (argparse._StoreTrueAction, argparse._HelpAction,
                                                       argparse._AppendAction)):
                continue
            if not action.option_strings and action.nargs not in ("?", "*"):
                continue
            text = formatter._expand_help(action) if action.help else ""
            if "default" not in text and "overrides" not in text:
                silent.append(f"{name} {action.option_strings or action.dest}: {text!r}")
            elif action.default not in (None, False, []) and "default" in text:
                assert str(action.default) in text or "default:" in text, (name, text)
    assert not silent, silent
    simulate_help = sub.choices["simulate"].format_help()
    assert "(default: 1000)" in simulate_help and "(default: 0)" in simulate_help  # a zero default is shown too


def test_config_output_is_a_config_that_loads_to_the_defaults(tmp_path) -> None:
    """README: ``longmd config > my.yaml`` starts a config; the file loads back to every default."""
    import dataclasses
    import os
    import subprocess
    import sys

    from longmd.config import Config, load_config

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-m", "longmd", "config"], capture_output=True, text=True, env=env,
                         check=True).stdout
    (tmp_path / "my.yaml").write_text(out)
    assert dataclasses.asdict(load_config(tmp_path / "my.yaml")) == dataclasses.asdict(Config())
