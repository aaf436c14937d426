"""Training stages: a list of stages with their own settings, frozen terms, per-stage files, exact resume."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_training_config, train_killed_in_epoch
from longmd.config import ConfigError
from longmd.training.stages import resolve_stages
from longmd.training.trainer import Trainer

STAGES = ("training.stages=[{name: force, mode: conventional, max_epochs: 2}, "
          "{name: rollout, mode: dynamic, s_max: 2, max_epochs_per_s: 2, lr: 0.0005}]")


def _config(data, out, *extra: str):
    return tiny_training_config(data, out, "training.batch_size=4", "training.val_windows=2", STAGES, *extra)


def _params(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_two_stages_run_in_order_with_their_own_settings(emt_data, tmp_path) -> None:
    trainer = Trainer(_config(emt_data, tmp_path / "run"), log=lambda *_: None)
    result = trainer.run()
    assert [(r["stage"], r["S"]) for r in result.records] == [("force", 1), ("force", 1), ("rollout", 1),
                                                                ("rollout", 1), ("rollout", 2), ("rollout", 2)]
    assert result.records[2]["lr"] == pytest.approx(0.0005)  # the second stage's own learning rate
    for name in ("best_force.pt", "best_force_S1.pt", "best_rollout.pt", "best_rollout_S2.pt", "best.pt"):
        assert (tmp_path / "run" / name).exists(), name
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["stage"] == 1


def test_resume_inside_the_second_stage_is_bit_for_bit(emt_data, tmp_path, monkeypatch) -> None:
    full = Trainer(_config(emt_data, tmp_path / "full"), log=lambda *_: None)
    full.run()
    train_killed_in_epoch(_config(emt_data, tmp_path / "killed"), 4, monkeypatch)
    resumed = Trainer(_config(emt_data, tmp_path / "killed"), resume=True, log=lambda *_: None)
    assert resumed.stage.name == "rollout" and resumed.stage_started == 2
    resumed.run()
    assert torch.equal(_params(full.model), _params(resumed.model))


def test_stage_errors_name_the_key(emt_data, tmp_path) -> None:
    bad = {
        "training.stages=[{name: a, smax: 2}]": r"training.stages\[0\]: unknown key 'smax'",
        "training.stages=[{name: a, device: cpu}]": r"training.stages\[0\].device: holds for the whole run",
        "training.stages=[{name: a}, {name: a}]": "stage names must differ",
        "training.stages=[{name: a, lr: fast}]": r"training.stages\[0\].lr",
        "training.stages=[{name: a, train: 3}]": r"training.stages\[0\].train",
    }
    for override, message in bad.items():
        cfg = tiny_training_config(emt_data, tmp_path / "x", override)
        with pytest.raises(ConfigError, match=message):
            resolve_stages(cfg)
    with pytest.raises(ConfigError, match="no energy term 'zbl'"):
        Trainer(tiny_training_config(emt_data, tmp_path / "y", "training.stages=[{name: a, train: [zbl]}]"),
                log=lambda *_: None)


def test_a_budget_that_ends_the_run_before_the_last_stage_saved_leaves_the_earlier_stage_best(emt_data, tmp_path):
    """max_minutes runs out at the first stage boundary (6 ms: any epoch takes longer): best.pt is the first
    stage's best model, and the log says so, instead of a best.pt that does not exist."""
    lines: list[str] = []
    result = Trainer(_config(emt_data, tmp_path / "run", "training.max_minutes=0.0001"), log=lines.append).run()
    assert [r["stage"] for r in result.records] == ["force"]
    best, first = tmp_path / "run" / "best.pt", tmp_path / "run" / "best_force.pt"
    assert best.read_bytes() == first.read_bytes()
    assert any("before the last stage (rollout) saved a best model" in line and "best_force.pt" in line
               for line in lines)
