"""Trading windows and pause windows per scope, in their own timezones.

Each window becomes minute-of-week spans in its timezone (zoneinfo handles DST by
converting the instant to local wall-clock time). The answer for a scope is cached
for the current second, so a decision costs a dict lookup.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from zoneinfo import ZoneInfo

from risk.limits import ScheduleWindow, weekly_spans

WEEK_MIN = 7 * 1440


class CompiledWindow:
    __slots__ = ("name", "scope", "kind", "zone", "spans")

    def __init__(self, w: ScheduleWindow):
        self.name = w.name
        self.scope = w.scope
        self.kind = w.kind
        self.zone = ZoneInfo(w.timezone)
        self.spans = weekly_spans(w)

    def contains(self, ts_s: float) -> bool:
        local = dt.datetime.fromtimestamp(ts_s, self.zone)
        minute = local.weekday() * 1440 + local.hour * 60 + local.minute
        return any(s <= minute < e or s <= minute + WEEK_MIN < e for s, e in self.spans)


class Schedule:
    """Which scopes may take new risk now: `blocked(scopes, now_ns)` -> (kind, detail) or None.

    kind is "pause" (inside a pause window) or "trading" (outside every trading window)."""

    def __init__(self, windows: Iterable[ScheduleWindow]):
        self.by_scope: dict[str, list[CompiledWindow]] = {}
        for w in windows:
            self.by_scope.setdefault(w.scope, []).append(CompiledWindow(w))
        self._cache_second = -1
        self._cache: dict[str, tuple[str, str] | None] = {}

    def __bool__(self) -> bool:
        return bool(self.by_scope)

    def scope_blocked(self, scope: str, now_ns: int) -> tuple[str, str] | None:
        sec = now_ns // 1_000_000_000
        if sec != self._cache_second:
            self._cache_second = sec
            self._cache = {}
        if scope in self._cache:
            return self._cache[scope]
        reason = self._evaluate(scope, now_ns / 1e9)
        self._cache[scope] = reason
        return reason

    def _evaluate(self, scope: str, ts_s: float) -> tuple[str, str] | None:
        windows = self.by_scope.get(scope)
        if not windows:
            return None
        trading = [w for w in windows if w.kind == "trading"]
        for w in windows:
            if w.kind == "pause" and w.contains(ts_s):
                return "pause", f"pause window {w.name!r} ({scope})"
        if trading and not any(w.contains(ts_s) for w in trading):
            return "trading", f"outside trading window {', '.join(repr(w.name) for w in trading)} ({scope})"
        return None

    def blocked(self, scopes: Iterable[str], now_ns: int) -> tuple[str, str] | None:
        for scope in scopes:
            if scope in self.by_scope:
                reason = self.scope_blocked(scope, now_ns)
                if reason is not None:
                    return reason
        return None
