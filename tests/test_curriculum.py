"""The curriculum on scripted validation curves (with the real ReduceLROnPlateau)."""

from __future__ import annotations

import torch

from longmd.training.curriculum import Curriculum


def _drive(curve: list[float], s_max: int = 3, patience: int = 2, max_epochs_per_s: int | None = None):
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([param], lr=1e-3)
    min_lr = 1e-5
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.1, patience=patience, min_lr=min_lr)
    cur = Curriculum(s_max=s_max, patience=patience, min_lr=min_lr, max_epochs_per_s=max_epochs_per_s)
    events = []
    for epoch, metric in enumerate(curve):
        lr = opt.param_groups[0]["lr"]  # the rate this epoch was trained at
        sched.step(metric)
        decision = cur.update(metric, lr)
        events.append((epoch, cur.s, round(lr, 8), decision.improved, decision.advance, decision.finished))
        if decision.advance:
            for group in opt.param_groups:
                group["lr"] = 1e-4  # lr_reset
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.1, patience=patience, min_lr=min_lr)
        if decision.finished:
            break
    return events


def test_s_increases_only_after_patience_at_the_floor_and_lr_resets() -> None:
    # Improves for 2 epochs, then flat: lr 1e-3 -> 1e-4 -> 1e-5 (floor), then `patience` stale epochs -> S=2.
    events = _drive([1.0, 0.5] + [0.5] * 30, s_max=2)
    advance = [e for e in events if e[4]]
    assert len(advance) == 1
    epoch, s, lr = advance[0][:3]
    # lr drops after epochs 4 and 7 (patience 2: 3 bad epochs each), so epochs 8 and 9 are trained at the
    # floor without improvement -> converged at epoch 9.
    assert lr == 1e-5 and s == 2 and epoch == 9
    # After the reset the next epoch starts from lr_reset and a fresh best.
    nxt = events[advance[0][0] + 1]
    assert nxt[2] == 1e-4 and nxt[3] is True
    assert events[-1][5] is True  # s_max = 2 converged -> finished


def test_improvement_at_the_floor_restarts_patience() -> None:
    curve = [1.0] + [1.0] * 7 + [0.9] + [0.9] * 5
    events = _drive(curve, s_max=1)
    finished = [e for e in events if e[5]]
    assert finished and finished[0][0] == 10  # improvement at epoch 8 restarts the count: 9, 10 stale


def test_max_epochs_per_s_caps_each_stage() -> None:
    events = _drive([1.0 - 0.01 * i for i in range(100)], s_max=3, max_epochs_per_s=4)
    assert [e[0] for e in events if e[4]] == [3, 7]
    assert events[-1][0] == 11 and events[-1][5]


def test_state_round_trip() -> None:
    cur = Curriculum(s_max=4, patience=3, min_lr=1e-6)
    cur.update(1.0, 1e-3)
    other = Curriculum(s_max=4, patience=3, min_lr=1e-6)
    other.load_state_dict(cur.state_dict())
    assert other == cur


def test_each_stop_names_its_reason() -> None:
    capped = Curriculum(s_max=2, patience=5, min_lr=1e-5, max_epochs_per_s=2)
    assert capped.update(1.0, 1e-3).reason == ""
    decision = capped.update(0.9, 1e-3)
    assert decision.advance and decision.reason == "max_epochs_per_s=2 reached"
    floor = Curriculum(s_max=1, patience=1, min_lr=1e-5, max_epochs_per_s=10)
    floor.update(1.0, 1e-5)
    decision = floor.update(1.0, 1e-5)  # no improvement at the floor: patience spent, the cap is not reached
    assert decision.finished and "patience=1" in decision.reason and "lr floor" in decision.reason
