"""Branching a finished run (checkpoint copy with new training keys), ``extend``, and ``data.train_fraction``."""

from __future__ import annotations

import pytest

from conftest import tiny_training_config
from longmd.config import ConfigError
from longmd.training.checkpoints import branch_run, read_checkpoint
from longmd.training.setup import load_data, make_split
from longmd.training.trainer import Trainer


def _config(data, out, *extra: str):
    return tiny_training_config(data, out, "training.batch_size=4", "training.val_windows=2", "training.lr=0.002",
                                "training.lr_reset=0.0005", *extra)


def _quiet(*_args) -> None:
    pass


def test_branches_of_a_finished_s1_run(emt_data, tmp_path) -> None:
    s1 = ("training.s_max=1", "training.max_epochs_per_s=2")
    source = tmp_path / "s1"
    Trainer(_config(emt_data, source, *s1), log=_quiet).run()
    before = read_checkpoint(source)

    dt = branch_run(source, tmp_path / "dt", {"rollout_gradient": "detached"})
    assert read_checkpoint(source)["config"] == before["config"]  # the source is untouched
    trainer = Trainer(_config(emt_data, dt, "training.s_max=2", "training.max_epochs_per_s=1"), resume=True,
                      log=_quiet)
    assert trainer.cfg.training.rollout_gradient == "detached"
    records = trainer.run().records
    assert [r["S"] for r in records] == [1, 1, 2] and records[2]["lr"] == pytest.approx(0.0005)

    # extend: the same S again with the learning rate reset, bounded by max_epochs; without it, nothing to do
    conv = branch_run(source, tmp_path / "conv")
    assert Trainer(_config(emt_data, conv, *s1), resume=True, log=_quiet).nothing_to_do
    records = Trainer(_config(emt_data, conv, *s1, "training.max_epochs=3"), resume=True, extend=True,
                      log=_quiet).run().records
    assert [r["S"] for r in records] == [1, 1, 1] and records[2]["lr"] == pytest.approx(0.0005)
    assert (conv / "best_S1.pt").exists()

    with pytest.raises(ValueError, match="unknown training keys"):
        branch_run(source, tmp_path / "bad", {"no_such_key": 1})


def test_train_fraction_keeps_whole_training_trajectories(emt_data, tmp_path) -> None:
    split = ("data.split=trajectory", "data.val_fraction=0.25", "data.test_fraction=0")
    cfg = _config(emt_data, tmp_path / "x", *split)
    full = make_split(cfg, load_data(cfg))
    half = make_split(_config(emt_data, tmp_path / "x", *split, "data.train_fraction=0.5"), load_data(cfg))
    assert len(full.subsets["train"]) == 3 and len(half.subsets["train"]) == 2
    assert set(half.subsets["train"]) <= set(full.subsets["train"]) and half.subsets["val"] == full.subsets["val"]
    with pytest.raises(ConfigError, match="train_fraction"):
        make_split(_config(emt_data, tmp_path / "x", *split, "data.train_fraction=1.5"), load_data(cfg))
