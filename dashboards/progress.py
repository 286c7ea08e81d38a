"""A small progress bar for long commands (report, backtest, sweep): stderr, one line, no dependency.

On a terminal it redraws one line; elsewhere (CI logs, pipes) it prints a line
at each 25% step, so logs stay short. `enabled=False` silences it.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any, TextIO


class Progress:
    def __init__(self, total: int, label: str, stream: TextIO | None = None, enabled: bool = True, width: int = 30):
        self.total = max(total, 1)
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.width = width
        self.done = 0
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_quarter = -1
        self._t0 = time.monotonic()

    def update(self, n: int = 1, note: str = "") -> None:
        self.done = min(self.done + n, self.total)
        if not self.enabled:
            return
        frac = self.done / self.total
        if self.tty:
            filled = int(frac * self.width)
            self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (self.width - filled)}] "
                              f"{self.done}/{self.total} {note:<24}")
            if self.done == self.total:
                self.stream.write(f" {time.monotonic() - self._t0:.1f}s\n")
            self.stream.flush()
        elif int(frac * 4) > self._last_quarter:
            self._last_quarter = int(frac * 4)
            self.stream.write(f"{self.label}: {self.done}/{self.total} ({frac:.0%}) {note}\n".rstrip() + "\n")
            self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> Any:
        if self.enabled and self.tty and self.done < self.total:
            self.stream.write("\n")
        return None
