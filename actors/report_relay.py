"""Execution reports from a gateway to the strategy that owns the order, surviving a strategy's move.

A strategy actor moved off a lost node is a new actor under the old name: a handle the gateway
cached still points at the dead one, and calls on it fail only later, silently. So the relay
keeps the last report call per strategy (the gateway checks it and calls `forget` when it
failed), and keeps a short
window of recent reports per strategy that it replays to every newly found handle. The
replayed reports are safe to apply twice: a strategy counts a fill once per trade id (seeded
from Redis when it restores) and a status change is idempotent.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from cluster.messages import ExecutionReport

REPLAY_WINDOW_S = 60.0
REPLAY_MAX = 5_000


class StrategyReportRelay:
    def __init__(self, lookup: Callable[[str], Any], send: Callable[[Any, ExecutionReport], Any], window_s: float = REPLAY_WINDOW_S, max_reports: int = REPLAY_MAX,
                 clock: Callable[[], float] = time.monotonic):
        self._lookup = lookup  # name -> handle, or raises when there is no such strategy (yet)
        self._send = send  # (handle, report) -> call reference
        self.window_s = window_s
        self.clock = clock
        self.handles: dict[str, Any] = {}
        self.last_call: dict[str, Any] = {}
        self.recent: dict[str, deque[tuple[float, ExecutionReport]]] = {}
        self.max_reports = max_reports
        self.replays = 0

    def deliver(self, report: ExecutionReport) -> None:
        name = report.strategy
        buf = self.recent.setdefault(name, deque(maxlen=self.max_reports))
        now = self.clock()
        buf.append((now, report))
        while buf and buf[0][0] < now - self.window_s:
            buf.popleft()
        handle = self.handles.get(name)
        if handle is None:
            self._find(name)  # replays the window, this report included
            return
        self._call(name, handle, report)

    def attach(self, name: str, handle: Any) -> None:
        """A (new) strategy actor under `name`: it gets the recent reports, then every new one."""
        self.handles[name] = handle
        self._replay(name, handle)

    def forget(self, name: str) -> None:
        """The last report call to `name` failed: its actor is gone; look the name up again next time."""
        self.handles.pop(name, None)
        self.last_call.pop(name, None)

    def _find(self, name: str) -> None:
        try:
            handle = self._lookup(name)
        except Exception:
            return  # not there (yet): the report waits in the window for the next one
        self.attach(name, handle)

    def _replay(self, name: str, handle: Any) -> None:
        for _, r in list(self.recent.get(name, ())):
            self.replays += 1
            self._call(name, handle, r)

    def _call(self, name: str, handle: Any, report: ExecutionReport) -> None:
        try:
            self.last_call[name] = self._send(handle, report)
        except Exception:
            self.forget(name)
