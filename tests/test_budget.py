"""``training.max_minutes`` is the budget of the whole run: resumes keep what is left of it, a budget stop is a
finish (a resume does nothing until the budget is raised), and a branch of a budget-stopped run starts its own
phase."""

from __future__ import annotations

from conftest import tiny_training_config
from longmd.training.checkpoints import branch_run, read_checkpoint
from longmd.training.run_log import RunLog, trained_minutes
from longmd.training.trainer import Trainer

TINY = 1e-6  # minutes: far less than any epoch takes


def _config(data, out, *extra: str):
    return tiny_training_config(data, out, "training.batch_size=4", "training.val_windows=2",
                                "training.mode=dynamic", "training.s_max=2", *extra)


def _quiet(*_args) -> None:
    pass


def test_a_budget_stop_is_a_finish_and_a_raised_budget_goes_on_at_the_same_s(emt_data, tmp_path) -> None:
    out = tmp_path / "run"
    records = Trainer(_config(emt_data, out, f"training.max_minutes={TINY}"), log=_quiet).run().records
    assert len(records) == 1  # the first epoch exceeds the budget: training stops after it
    assert read_checkpoint(out)["finished"].startswith("max_minutes")

    lines: list[str] = []
    files = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    again = Trainer(_config(emt_data, out, f"training.max_minutes={TINY}"), resume=True, log=lines.append)
    assert again.nothing_to_do
    again.run()
    assert any("nothing to do" in line and "training.max_minutes" in line for line in lines)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == files  # the second demo run

    # raising s_max alone does not lift the budget; raising the budget trains one more epoch of the same S
    assert Trainer(_config(emt_data, out, f"training.max_minutes={TINY}", "training.s_max=3"), resume=True,
                   log=_quiet).nothing_to_do
    spent = records[0]["epoch_time_s"] / 60
    records = Trainer(_config(emt_data, out, f"training.max_minutes={spent + TINY}"), resume=True,
                      log=_quiet).run().records
    assert [r["S"] for r in records] == [1, 1]


def test_an_interrupted_run_resumes_with_what_is_left_of_its_budget(emt_data, tmp_path) -> None:
    out = tmp_path / "run"
    first = Trainer(_config(emt_data, out, "training.max_epochs=2"), log=_quiet).run().records  # "killed" here
    assert read_checkpoint(out)["finished"] is None
    spent = trained_minutes(first)
    # a budget the two epochs already used up: nothing more is trained (per invocation, one epoch would be)
    assert len(Trainer(_config(emt_data, out, f"training.max_minutes={spent / 2}"), resume=True,
                       log=_quiet).run().records) == 2
    assert read_checkpoint(out)["finished"].startswith("max_minutes")
    # the rest of a larger budget: exactly one more epoch fits before the total exceeds it
    records = Trainer(_config(emt_data, out, f"training.max_minutes={spent + TINY}"), resume=True,
                      log=_quiet).run().records
    assert len(records) == 3


def test_a_branch_of_a_budget_stopped_run_starts_the_next_s(emt_data, tmp_path) -> None:
    source = tmp_path / "s1"
    Trainer(_config(emt_data, source, "training.s_max=1", f"training.max_minutes={TINY}"), log=_quiet).run()
    assert read_checkpoint(source)["finished"].startswith("max_minutes")
    dt = branch_run(source, tmp_path / "dt")
    assert read_checkpoint(dt)["finished"].startswith("branched from")
    spent = trained_minutes(RunLog(source, write=False).records)
    records = Trainer(_config(emt_data, dt, "training.s_max=2", f"training.max_minutes={spent + TINY}"),
                      resume=True, log=_quiet).run().records
    assert [r["S"] for r in records] == [1, 2]
