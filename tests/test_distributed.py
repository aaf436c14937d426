"""Data-parallel training on 2 CPU processes (Gloo) against a single process.

The equivalence tested: every EMT system is Cu28Au4 (32 atoms), so when ranks train on disjoint windows the
window-weighted mean of their per-rank losses (MEPA pools per species over a rank's batch) is exactly the
loss of the combined batch in one process, and so are the gradients: one optimisation step on 2 ranks
with 4 + 4 (and 4 + 2) windows gives the parameters of one step on those 8 (6) windows, up to float64
rounding (MEPA at S = 1 and S = 3, MSE at S = 1). With mixed compositions the two would differ (per-rank
species pooling), which is documented.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import tiny_training_config
from longmd.analysis.rollout_test import RolloutErrors
from longmd.training import distributed
from longmd.training import trainer as trainer_module
from longmd.training.trainer import Trainer

WORLD = 2


def _config(data, out, *extra: str):
    # val_windows=3 is odd on purpose: shards of 2 + 1 windows, nothing padded.
    return tiny_training_config(data, out, "training.val_windows=3", "training.device=cpu", *extra)


def _params(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _errors(errors: RolloutErrors) -> dict:
    return {"mepa": errors.mean_mepa, "per_species": errors.per_species, "n_windows": errors.n_windows}


def _two_steps(trainer: Trainer) -> list[torch.Tensor]:
    """One optimisation step at S = 1 on 8 windows, then one at S = 3 on 6 windows; parameters after each."""
    trainer.train_epoch(1)
    after = [_params(trainer.model).clone()]
    trainer.cfg.training.windows_per_epoch = 6
    trainer.train_epoch(3)
    return [*after, _params(trainer.model).clone()]


class _Killed(Exception):
    pass


def _worker(rank: int, data: str, tmp: str) -> None:
    torch.set_num_threads(1)
    os.environ["LONGMD_CACHE"] = os.path.join(tmp, "cache")  # a cold cache: rank 0 builds, rank 1 loads
    trainer_module.plot_learning_curve = lambda records, path: None  # not under test; saves seconds
    dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank, world_size=WORLD)
    try:
        results: dict = {}
        trainer = Trainer(_config(data, f"{tmp}/step", "training.batch_size=4"), log=lambda *_: None)
        results["validation"] = _errors(trainer.validate())
        results["steps"] = _two_steps(trainer)
        mse = Trainer(_config(data, f"{tmp}/mse", "training.batch_size=4", "training.loss=mse"), log=lambda *_: None)
        mse.train_epoch(1)
        results["mse_step"] = _params(mse.model)

        args = ("training.batch_size=4", "training.s_max=2", "training.max_epochs_per_s=2", "training.max_epochs=4")
        full = Trainer(_config(data, f"{tmp}/full", *args), log=lambda *_: None)
        full.run()
        killed = Trainer(_config(data, f"{tmp}/killed", *args), log=lambda *_: None)
        original = killed.train_epoch

        def dies_in_epoch_3(s: int) -> float:
            if killed.epoch == 3:
                raise _Killed  # torchrun stops every rank when one dies
            return original(s)

        killed.train_epoch = dies_in_epoch_3
        with pytest.raises(_Killed):
            killed.run()
        resumed = Trainer(_config(data, f"{tmp}/killed", *args), resume=True, log=lambda *_: None)
        results["resumed_at"] = (resumed.epoch, resumed.curriculum.s)
        resumed.run()
        results["full"] = (_params(full.model), [r["val_mepa"] for r in full.run_log.records])
        results["resumed"] = (_params(resumed.model), [r["val_mepa"] for r in resumed.run_log.records])
        torch.save(results, f"{tmp}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(emt_data, tmp_path_factory) -> tuple[dict, dict, str]:
    tmp = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(str(emt_data), str(tmp)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    return ranks[0], ranks[1], str(tmp)


def test_one_step_on_two_ranks_equals_one_process_with_the_combined_batch(emt_data, tmp_path, two_ranks) -> None:
    rank0, rank1, _ = two_ranks
    single = Trainer(_config(emt_data, tmp_path / "one", "training.batch_size=8"), log=lambda *_: None)
    expected = _two_steps(single)
    for got0, got1, want in zip(rank0["steps"], rank1["steps"], expected):
        assert torch.equal(got0, got1)  # the ranks stay identical
        torch.testing.assert_close(got0, want, rtol=0, atol=1e-12)
    mse = Trainer(_config(emt_data, tmp_path / "mse", "training.batch_size=8", "training.loss=mse"),
                  log=lambda *_: None)
    mse.train_epoch(1)
    torch.testing.assert_close(rank0["mse_step"], _params(mse.model), rtol=0, atol=1e-12)
    # The test can tell: a rank training alone on its 4 windows moves elsewhere.
    alone = Trainer(_config(emt_data, tmp_path / "alone", "training.batch_size=4"), log=lambda *_: None)
    alone.train_epoch(1)
    assert (_params(alone.model) - expected[0]).abs().max() > 1e-5


def test_validation_mepa_on_two_ranks_equals_one_process(emt_data, tmp_path, two_ranks) -> None:
    rank0, rank1, _ = two_ranks
    single = Trainer(_config(emt_data, tmp_path / "one", "training.batch_size=4"), log=lambda *_: None)
    expected = single.validate()
    assert rank0["validation"]["n_windows"] == rank1["validation"]["n_windows"] == expected.n_windows == 3
    assert rank0["validation"]["mepa"] == rank1["validation"]["mepa"]  # every rank gets the same metric
    assert rank0["validation"]["mepa"] == pytest.approx(expected.mean_mepa, rel=1e-13)
    torch.testing.assert_close(torch.as_tensor(rank0["validation"]["per_species"]),
                               torch.as_tensor(expected.per_species), rtol=1e-13, atol=0)


def test_killed_distributed_run_resumes_exactly(two_ranks) -> None:
    rank0, rank1, tmp = two_ranks
    assert rank0["resumed_at"] == rank1["resumed_at"] == (3, 2)
    for rank in (rank0, rank1):
        assert torch.equal(rank["resumed"][0], rank0["full"][0])
        assert rank["resumed"][1] == rank0["full"][1]
    assert len(rank0["full"][1]) == 4
    assert sorted(os.listdir(f"{tmp}/cache/neighbors"))[0].startswith("reference-neighbors-")


def test_torchrun_cli_trains_on_two_processes(emt_data, tmp_path) -> None:
    out = tmp_path / "run"
    overrides = [
        "data.split=time_blocks", "data.val_fraction=0.25", "data.test_fraction=0.25",
        "model.options={hidden: 8, n_rff: 8, n_layers: 1}", "training.batch_size=4", "training.windows_per_epoch=8",
        "training.val_length=6", "training.val_windows=3", "training.max_epochs=1", "training.progress=false",
        "training.threads=1", f"data.paths=[{emt_data}]",
    ]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
               "-m", "longmd", "train", "--out", str(out), "--device", "cpu"]
    for item in overrides:
        command += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LONGMD_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("results in") == 1  # rank 0 alone reports
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    assert (out / "checkpoint.pt").exists() and (out / "best.pt").exists()
    assert not distributed.active()
