"""The weight average (training.ema_decay): the update formula by hand, the swap, and what a run saves."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_training_config
from longmd.config import ConfigError, load_config
from longmd.models.io import load_model
from longmd.training.ema import WeightAverage, ema_factor
from longmd.training.trainer import Trainer


def test_warm_up_and_update_match_hand_computed_values() -> None:
    assert ema_factor(0.99, 1) == pytest.approx(2 / 11)
    assert ema_factor(0.99, 8) == pytest.approx(9 / 18)
    assert ema_factor(0.99, 10_000) == 0.99
    w = torch.nn.Parameter(torch.tensor([0.0, 2.0], dtype=torch.float64))
    ema = WeightAverage([w], 0.99)
    with torch.no_grad():
        w.copy_(torch.tensor([1.0, 4.0]))
    ema.update()  # d = 2/11: avg = 2/11 * old + 9/11 * new
    assert torch.allclose(ema.average[0], torch.tensor([9 / 11, 2 * 2 / 11 + 4 * 9 / 11], dtype=torch.float64))
    with torch.no_grad():
        w.copy_(torch.tensor([3.0, 0.0]))
    ema.update()  # d = 3/12
    expected = torch.tensor([0.25 * 9 / 11 + 0.75 * 3, 0.25 * (4 / 11 + 36 / 11)], dtype=torch.float64)
    assert torch.allclose(ema.average[0], expected)


def test_applied_swaps_in_the_average_and_restores_the_weights_exactly() -> None:
    w = torch.nn.Parameter(torch.randn(5, dtype=torch.float64))
    raw = w.detach().clone()
    ema = WeightAverage([w], 0.5)
    ema.average[0].fill_(7.0)
    with ema.applied():
        assert torch.all(w == 7.0)
    assert torch.equal(w.detach(), raw)
    with pytest.raises(RuntimeError), ema.applied():
        raise RuntimeError("a failing validation")
    assert torch.equal(w.detach(), raw)  # restored on errors too


def test_a_run_saves_and_validates_the_averaged_weights(emt_data, tmp_path) -> None:
    cfg = tiny_training_config(emt_data, tmp_path / "run", "training.batch_size=4", "training.val_windows=2",
                               "training.s_max=1", "training.max_epochs=2", "training.ema_decay=0.9")
    trainer = Trainer(cfg, log=lambda *_: None)
    trainer.run()
    last = load_model(tmp_path / "run" / "last.pt")
    averaged = [a for a in trainer.ema.average]
    saved = [p for p in last.parameters() if p.requires_grad]
    assert len(saved) == len(averaged)
    assert all(torch.equal(s.detach(), a.to(s.dtype)) for s, a in zip(saved, averaged))
    raw = [p for p in trainer.model.parameters() if p.requires_grad]
    assert any(not torch.equal(r.detach(), a) for r, a in zip(raw, averaged))  # training went on with the raw ones


def test_ema_decay_must_be_below_one() -> None:
    with pytest.raises(ConfigError, match="ema_decay"):
        load_config(None, ["training.ema_decay=1.0"])
