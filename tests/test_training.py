"""The trainer end to end on small EMT data: DT = conventional at S = 1, exact resume, NaN handling, config."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import tiny_training_config
from longmd.config import ConfigError, load_config
from longmd.models.io import load_model
from longmd.training import window_rollouts
from longmd.training.trainer import Trainer, TrainingDiverged, train


def _config(data, out, *extra: str):
    return tiny_training_config(data, out, "training.batch_size=4", "training.val_windows=2", *extra)


def _params(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_dynamic_training_at_s1_equals_conventional_training(emt_data, tmp_path) -> None:
    dynamic = Trainer(_config(emt_data, tmp_path / "dt", "training.mode=dynamic", "training.s_max=1",
                              "training.max_epochs=2"), log=lambda *_: None)
    dynamic.run()
    conventional = Trainer(_config(emt_data, tmp_path / "conv", "training.mode=conventional",
                                   "training.max_epochs=2"), log=lambda *_: None)
    conventional.run()
    assert torch.equal(_params(dynamic.model), _params(conventional.model))


def test_curriculum_raises_s_resets_lr_and_keeps_best_of_every_s(emt_data, tmp_path) -> None:
    cfg = _config(emt_data, tmp_path / "run", "training.s_max=3", "training.max_epochs_per_s=2",
                  "training.lr=0.002", "training.lr_reset=0.0005")
    result = train(cfg, log=lambda *_: None)
    records = result.records
    assert [r["S"] for r in records] == [1, 1, 2, 2, 3, 3]
    assert [r["lr"] for r in records][2] == pytest.approx(0.0005)  # reset when S grew
    for s in (1, 2, 3):
        assert (tmp_path / "run" / f"best_S{s}.pt").exists()
    best = load_model(tmp_path / "run" / "best.pt")
    assert best.n_parameters() > 0
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 6 and {"S", "lr", "train_loss", "val_mepa", "epoch_time_s", "peak_memory_MB"} <= set(
        json.loads(lines[0])
    )
    for name in ("config.yaml", "split.json", "metrics.csv", "learning_curve.png", "summary.md", "last.pt"):
        assert (tmp_path / "run" / name).stat().st_size > 0


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_resume_reproduces_an_uninterrupted_run_bit_for_bit(emt_data, tmp_path, monkeypatch, ema) -> None:
    args = ("training.s_max=2", "training.max_epochs_per_s=2", "training.max_epochs=4", f"training.ema_decay={ema}")
    full = Trainer(_config(emt_data, tmp_path / "full", *args), log=lambda *_: None)
    full.run()

    killed = Trainer(_config(emt_data, tmp_path / "killed", *args), log=lambda *_: None)
    original = Trainer.train_epoch

    def dies_in_epoch_3(self, s):
        if self.epoch == 3:
            raise KeyboardInterrupt  # a kill in the middle of the 4th epoch
        return original(self, s)

    monkeypatch.setattr(Trainer, "train_epoch", dies_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        killed.run()
    monkeypatch.setattr(Trainer, "train_epoch", original)
    resumed = Trainer(_config(emt_data, tmp_path / "killed", *args), resume=True, log=lambda *_: None)
    assert resumed.epoch == 3 and resumed.curriculum.s == 2
    resumed.run()
    assert torch.equal(_params(full.model), _params(resumed.model))
    for name in ("best.pt", "last.pt"):  # the averaged weights, when EMA is on
        saved = [_params(load_model(tmp_path / run / name)) for run in ("full", "killed")]
        assert torch.equal(*saved)
    strip = [{k: v for k, v in r.items() if k not in ("epoch_time_s", "peak_memory_MB")} for r in full.run_log.records]
    again = [{k: v for k, v in r.items() if k not in ("epoch_time_s", "peak_memory_MB")}
             for r in resumed.run_log.records]
    assert strip == again


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(emt_data, tmp_path, monkeypatch) -> None:
    cfg = _config(emt_data, tmp_path / "run", "training.s_max=1", "training.max_epochs=3")
    trainer = Trainer(cfg, log=lambda *_: None)
    original = window_rollouts.rollout_loss

    def poisoned(*args, **kwargs):
        loss, parts = original(*args, **kwargs)
        return (loss * math.nan if trainer.epoch == 1 else loss), parts

    monkeypatch.setattr(window_rollouts, "rollout_loss", poisoned)
    with pytest.raises(TrainingDiverged, match="non-finite loss at S=1, epoch 1"):
        trainer.run()
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_bad_configs_are_rejected_with_the_key(emt_data, tmp_path) -> None:
    with pytest.raises(ConfigError, match="unknown key 'training.smax'"):
        load_config(None, ["training.smax=3"])
    with pytest.raises(ConfigError, match="rollout_gradient"):
        Trainer(_config(emt_data, tmp_path, "training.rollout_gradient=sometimes"), log=lambda *_: None)
    with pytest.raises(ConfigError, match="split=frames"):
        Trainer(_config(emt_data, tmp_path, "data.split=frames", "training.s_max=3"), log=lambda *_: None)
    with pytest.raises(ConfigError, match="no training window of S=35"):
        Trainer(_config(emt_data, tmp_path / "long", "training.s_max=40", "training.max_epochs_per_s=1"),
                log=lambda *_: None).train_epoch(35)


def test_rollout_gradient_modes_train(emt_data, tmp_path) -> None:
    for mode in ("detached", "truncated:2"):
        cfg = _config(emt_data, tmp_path / mode.replace(":", "_"), "training.s_max=3",
                      "training.max_epochs_per_s=1", f"training.rollout_gradient={mode}")
        result = train(cfg, log=lambda *_: None)
        assert [r["S"] for r in result.records] == [1, 2, 3]
        assert all(math.isfinite(r["train_loss"]) for r in result.records)


def test_energies_stay_right_through_rollout_training(emt_data, tmp_path) -> None:
    """S > 1 losses have no energy term; refitted per-species offsets keep energies near the reference."""
    from longmd.data.batching import collate_windows
    from longmd.data.windows import Window

    trainer = Trainer(_config(emt_data, tmp_path / "run", "training.s_max=3", "training.max_epochs_per_s=2"),
                      log=lambda *_: None)
    trainer.run()
    batch = collate_windows(trainer.trajectories, [Window(t, f, 1) for t in range(4) for f in (0, 20)],
                            trainer.neighbors, dtype=torch.float64)
    with torch.no_grad():
        error = (trainer.model(batch.graph(0)) - batch.energy[0]) / 32
    assert error.abs().max() < 0.02  # eV/atom; without the refit the offset drifts freely at S > 1


def test_mixed_timesteps_train_single_frames_and_refuse_rollouts(tmp_path) -> None:
    from conftest import make_emt_trajectories

    paths = [make_emt_trajectories(tmp_path / "a.extxyz", n_frames=20, timestep_fs=2.0),
             make_emt_trajectories(tmp_path / "b.extxyz", n_frames=20, timestep_fs=1.0, seed=1)]
    data = f"{paths[0]},{paths[1]}"
    single = _config(data, tmp_path / "conv", "training.mode=conventional", "data.split=frames",
                     "data.val_fraction=0.1", "training.max_epochs=1")
    assert Trainer(single, log=lambda *_: None).run().records
    with pytest.raises(ConfigError, match=r"need one timestep for all trajectories \(.*2.0 fs.*1.0 fs"):
        Trainer(_config(data, tmp_path / "dt", "training.s_max=3"), log=lambda *_: None)


def test_given_reference_energies_are_saved_exactly_and_average_is_the_fit(emt_data, tmp_path) -> None:
    """model.e0s: {symbol or Z: eV} fixes the reference energies (through S > 1 epochs, into best.pt);
    average keeps the least-squares fit over the training frames."""
    given = Trainer(_config(emt_data, tmp_path / "given", "model.e0s={Cu: -3.5, 79: -0.25}", "training.s_max=2",
                            "training.max_epochs_per_s=1"), log=lambda *_: None)
    given.run()
    assert load_model(tmp_path / "given" / "best.pt").reference.reference_energies() == {29: -3.5, 79: -0.25}
    fitted = Trainer(_config(emt_data, tmp_path / "avg", "training.max_epochs=1"), log=lambda *_: None)
    assert fitted.cfg.model.e0s == "average"  # the default: the least-squares fit, then centred on the network
    assert fitted.model.reference.reference_energies() != fitted.reference["reference_energies"]
    with pytest.raises(ConfigError, match=r"model.e0s: no energy for Z = \[79\]"):
        Trainer(_config(emt_data, tmp_path / "bad", "model.e0s={Cu: -3.5}"), log=lambda *_: None)
    with pytest.raises(ConfigError, match="model.e0s: 'Qq' is not an element"):
        Trainer(_config(emt_data, tmp_path / "bad2", "model.e0s={Qq: 1.0}"), log=lambda *_: None)
    with pytest.raises(ConfigError, match="model.e0s: expected average"):
        Trainer(_config(emt_data, tmp_path / "bad3", "model.e0s=mean"), log=lambda *_: None)
