"""benchmarks/vs_mace.py's whole-budget conventional training: a run that converges early starts its S afresh
with the learning rate reset, until the budget is spent."""

import sys
from pathlib import Path

from conftest import tiny_training_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import vs_mace  # noqa: E402


def test_converged_runs_restart_with_the_lr_reset_until_the_budget_is_spent(emt_data, tmp_path, monkeypatch):
    # the loop's clock counts epochs (a deterministic stand-in for minutes); each phase ends after 2 epochs
    monkeypatch.setattr(vs_mace, "trained_minutes", len)
    out = tmp_path / "run"
    cfg = tiny_training_config(emt_data, out, "training.batch_size=4", "training.val_windows=2",
                               "training.mode=conventional", "training.max_epochs_per_s=2", "training.lr=3e-3",
                               "training.lr_reset=1e-3", "training.max_minutes=5")
    vs_mace.train_whole_budget(cfg, log=lambda *_: None)
    spent = vs_mace.records(out)
    assert len(spent) == 6  # 2 + 2 + 2 epochs: the budget (5) is reached during the third phase
    assert {r["S"] for r in spent} == {1}
    assert [r["lr"] for r in spent][::2] == [3e-3, 1e-3, 1e-3]  # each phase starts at lr (then lr_reset)
