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


def test_best_model_of_each_s_and_its_report_section(tmp_path) -> None:
    """The paper's Figure 3 data: per S the lowest validation MEPA (a blown-up, infinite one ranks last)."""
    import json
    import math

    from longmd.evaluation.report import add_training_section
    from longmd.training.run_log import best_per_s, plot_best_per_s

    mepas = {1: [0.50, 0.31, 0.40], 2: [math.inf, 0.27], 3: [0.29, 0.22, 0.25, 0.24]}
    records, epoch = [], 0
    for s, values in mepas.items():
        for v in values:
            records.append({"epoch": epoch, "S": s, "train_loss": 1.0, "val_mepa": v, "val_mepa_Z1": v / 3,
                            "val_mepa_Z46": 2 * v / 3})
            epoch += 1
    best = best_per_s(records)
    assert [(b["S"], b["val_mepa"], b["epoch"], b["epochs"]) for b in best] == [
        (1, 0.31, 1, 3), (2, 0.27, 4, 2), (3, 0.22, 6, 4)]
    assert plot_best_per_s(records, tmp_path / "best_per_s.png").stat().st_size > 1000
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    report = tmp_path / "eval" / "report.md"
    report.parent.mkdir()
    report.write_text("# longmd evaluation\n")
    text = add_training_section(report, run).read_text()
    assert "| S | epochs | best at epoch | validation MEPA | MEPA H | MEPA Pd |" in text
    assert "| 2 | 2 | 4 | 0.27 | 0.09 | 0.18 |" in text and "| 3 | 4 | 6 | 0.22 | 0.07333 | 0.1467 |" in text
    assert (tmp_path / "eval" / "best_per_s.png").is_file()
