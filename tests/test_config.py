"""The training config: values are checked against the declared types, errors name their source and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from longmd.config import ConfigError, load_config
from longmd.training.setup import RESUMABLE_CHANGES


def test_numeric_strings_from_yaml_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("training:\n  lr: 1e-3\n  max_epochs: 1e2\ndata:\n  timestep_fs: 5e-1\n")
    cfg = load_config(path)  # PyYAML reads 1e-3 (no dot) as a string
    assert cfg.training.lr == 1e-3 and cfg.data.timestep_fs == 0.5
    assert cfg.training.max_epochs == 100 and isinstance(cfg.training.max_epochs, int)
    cfg = load_config("demo", ["training.lr=2e-4", "training.windows_per_epoch=8.0", "training.max_minutes=30"])
    assert cfg.training.lr == 2e-4 and cfg.training.windows_per_epoch == 8 and cfg.training.max_minutes == 30.0
    assert load_config(None, ["training.max_epochs=null"]).training.max_epochs is None


def test_errors_name_the_override_or_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("training:\n  lr: fast\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: training\.lr: expected float, got 'fast'"):
        load_config(path)
    path.write_text("training:\n  s_max: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, ["training.lr=abc"])
    assert str(info.value) == "override 'training.lr=abc': training.lr: expected float, got 'abc'"
    with pytest.raises(ConfigError, match=r"^override 'trainng.lr=1': unknown key 'trainng'"):
        load_config(path, ["trainng.lr=1"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("training.s_max=4.5", "training.s_max: expected int, got 4.5"),
        ("training.max_epochs=-3", "training.max_epochs: must be >= 0, got -3"),
        ("training.max_epochs_per_s=0", "training.max_epochs_per_s: must be >= 1"),
        ("training.max_minutes=-1", "training.max_minutes: must be >= 0"),
        ("training.windows_per_epoch=2.5", "training.windows_per_epoch: expected int"),
        ("training.threads=many", "training.threads: expected int"),
        ("data.timestep_fs=abc", "data.timestep_fs: expected float, got 'abc'"),
        ("data.paths=[a.xyz, 3]", r"data.paths\[1\]: expected str, got 3"),
        ("training.batch_size=true", "training.batch_size: expected int, got True"),
        ("training.progress=1", "training.progress: expected true/false"),
        ("training.lr=.nan", "training.lr: expected a finite number"),
    ],
)
def test_bad_values_are_rejected_with_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_docs_list_every_key_a_resume_may_change() -> None:
    text = (Path(__file__).parents[1] / "docs" / "training.md").read_text()
    sentence = text[text.index("A resume keeps the stored"):].split(")")[0]
    assert all(f"`{key}`" in sentence for key in RESUMABLE_CHANGES), sentence


@pytest.mark.parametrize("key", ["s_max", "batch_size", "val_length", "val_windows", "neighbor_update_every"])
def test_counts_below_one_are_rejected_where_they_are_read(key: str) -> None:
    with pytest.raises(ConfigError, match=f"training.{key}: must be >= 1, got 0"):
        load_config(None, [f"training.{key}=0"])


def test_huge_and_infinite_numbers_are_rejected_with_the_key() -> None:
    with pytest.raises(ConfigError, match="training.lr: expected float"):
        load_config(None, ["training.lr=1" + "0" * 400])
    with pytest.raises(ConfigError, match="training.max_minutes: expected a finite number"):
        load_config(None, ["training.max_minutes=.inf"])


@pytest.mark.parametrize(("override", "message"), [
    ("training.lr=-0.001", "training.lr: must be > 0"), ("training.lr=0", "training.lr: must be > 0"),
    ("training.lr_reset=0", "training.lr_reset: must be > 0"), ("training.lr_factor=1", "must be < 1"),
    ("training.grad_clip=-1", "training.grad_clip: must be >= 0"),
])
def test_value_ranges_are_checked_naming_the_key(override, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])
    assert load_config(None, ["training.lr=1e-4"]).training.lr == 1e-4
