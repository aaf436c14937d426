"""Datasets embedded in the package, addressed as ``example:NAME`` wherever a data path is expected."""

from __future__ import annotations

import json
from pathlib import Path

EXAMPLES_DIR = Path(__file__).parent / "examples"
PREFIX = "example:"


def available() -> list[str]:
    """Names of the embedded datasets."""
    return sorted(p.name.split(".")[0] for p in EXAMPLES_DIR.glob("*.extxyz*"))


def resolve(path: str | Path) -> Path:
    """``example:NAME`` -> the embedded file; any other path is returned unchanged."""
    text = str(path)
    if not text.startswith(PREFIX):
        return Path(path)
    name = text[len(PREFIX) :].replace("-", "_")
    matches = sorted(EXAMPLES_DIR.glob(f"{name}.extxyz*"))
    if not matches:
        raise FileNotFoundError(f"no embedded example '{name}' (available: {', '.join(available()) or 'none'})")
    return matches[0]


def metadata(name: str) -> dict:
    """The metadata JSON stored beside an embedded dataset."""
    return json.loads((EXAMPLES_DIR / f"{name.replace('-', '_')}.json").read_text())
