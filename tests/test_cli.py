"""The command line: commands answer, errors are one clear line, train writes a run directory."""

from __future__ import annotations

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
