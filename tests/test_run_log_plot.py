"""learning_curve.png: the S > 1 loss (step 0 weighted x w) is shown per frame, so a new S is no jump."""

from __future__ import annotations

import dataclasses

from longmd.config import Config, save_config
from longmd.training.run_log import _first_step_weight, per_frame_loss, plot_learning_curve


def test_per_frame_loss_is_continuous_across_an_s_increase() -> None:
    # the same per-step error e at S = 1 and S = 3 with w = 50: raw losses e and (50 + 2) e
    e = 0.3
    assert per_frame_loss(e, 1, 50.0) == e
    assert per_frame_loss((50.0 + 2) * e, 3, 50.0) == e


def test_plot_uses_the_run_first_step_weight(tmp_path) -> None:
    cfg = Config()
    cfg = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, first_step_weight=20.0))
    save_config(cfg, tmp_path / "config.yaml")
    assert _first_step_weight(tmp_path) == 20.0
    assert _first_step_weight(tmp_path / "elsewhere") == Config().training.first_step_weight
    records = [{"epoch": k, "S": 1 + k // 4, "train_loss": 0.5 * (20 + k // 4) if k >= 4 else 0.5,
                "val_mepa": 0.4 - 0.01 * k} for k in range(12)]
    path = plot_learning_curve(records, tmp_path / "learning_curve.png")
    assert path.stat().st_size > 1000
