"""Progress display: tqdm bars on a terminal; in redirected logs (nohup, SLURM, ``> log``) no bars, which
would flood the file, but at most a line every so often (per epoch in training, per N steps in MD)."""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm


def bars_disabled(enabled: bool) -> bool | None:
    """tqdm's ``disable`` for a bar the user asked for (``enabled``): None = off unless stderr is a terminal."""
    return None if enabled else True


class LineProgress:
    """The part of tqdm's interface that simulate uses, printing one line per ``every`` units instead."""

    def __init__(self, total: int, initial: int = 0, desc: str = "", unit: str = "it", lines: int = 20) -> None:
        self.total, self.n, self.desc, self.unit = total, initial, desc, unit
        self.every = max(1, total // lines)
        self._next = (initial // self.every + 1) * self.every
        self._postfix, self._printed = "", initial

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        self._postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.n >= self._next or (self.n >= self.total and self._printed < self.n):
            self._printed = self.n
            print(f"{self.desc}: {self.n}/{self.total} {self.unit}" + (f" ({self._postfix})" if self._postfix else ""),
                  flush=True)
            self._next = (self.n // self.every + 1) * self.every

    def close(self) -> None:
        """Nothing to clear (tqdm's interface)."""

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def step_progress(total: int, initial: int, enabled: bool, desc: str, unit: str = "step") -> tqdm | LineProgress:
    """A tqdm bar on a terminal, a :class:`LineProgress` in a redirected log, a silent bar when not ``enabled``."""
    if enabled and not sys.stderr.isatty():
        return LineProgress(total, initial, desc, unit)
    return tqdm(total=total, initial=initial, disable=not enabled, unit=unit, desc=desc)
