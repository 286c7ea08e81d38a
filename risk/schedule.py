"""Trading windows and pause windows per scope, in their own timezones.

A window of fixed times becomes minute-of-week spans in its timezone (zoneinfo handles
DST by converting the instant to local wall-clock time). A window with sunrise/sunset
is evaluated per date: its occurrences that could contain the instant (starting this
week or last) are turned into instants, the sun events computed for that date at the
window's latitude/longitude (`risk.sun`, cached per date). The answer for a scope is
cached for the current second, so a decision costs a dict lookup.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from zoneinfo import ZoneInfo

from risk.limits import ScheduleWindow, Span, TimeSpec, uses_sun, weekly_spans, window_spans
from risk.sun import sun_event

WEEK_MIN = 7 * 1440


class CompiledWindow:
    __slots__ = ("name", "scope", "kind", "zone", "zone_name", "spans", "sun_spans", "lat", "lon")

    def __init__(self, w: ScheduleWindow):
        self.name = w.name
        self.scope = w.scope
        self.kind = w.kind
        self.zone = ZoneInfo(w.timezone)
        self.zone_name = w.timezone
        self.lat, self.lon = w.latitude, w.longitude
        sun = uses_sun(w)
        self.spans = [] if sun else weekly_spans(w)
        self.sun_spans: list[Span] = window_spans(w) if sun else []

    def contains(self, ts_s: float) -> bool:
        local = dt.datetime.fromtimestamp(ts_s, self.zone)
        if self.sun_spans:
            return self._contains_dated(ts_s, local.date())
        minute = local.weekday() * 1440 + local.hour * 60 + local.minute
        return any(s <= minute < e or s <= minute + WEEK_MIN < e for s, e in self.spans)

    def _contains_dated(self, ts_s: float, today: dt.date) -> bool:
        """Is `ts_s` inside an occurrence that starts on this week's or last week's start day?"""
        for sp in self.sun_spans:
            back = (today.weekday() - sp.day) % 7
            for weeks in (0, 1):
                first = today - dt.timedelta(days=back + 7 * weeks)
                start = self._instant(first, sp.start)
                end_day = first + dt.timedelta(days=sp.end_days)
                end = self._instant(end_day, sp.end)
                if start is None or end is None:
                    return self.kind == "pause"  # a sun event that does not happen: fail closed
                if end <= start:
                    end = self._instant(end_day + dt.timedelta(days=sp.wrap_days), sp.end)
                    if end is None:
                        return self.kind == "pause"
                if start <= ts_s < end:
                    return True
        return False

    def _instant(self, day: dt.date, spec: TimeSpec) -> float | None:
        """POSIX seconds of a time spec on a local date."""
        if isinstance(spec, int):
            return dt.datetime(day.year, day.month, day.day, spec // 60, spec % 60, tzinfo=self.zone).timestamp()
        event, offset = spec
        t = sun_event(day, self.lat, self.lon, event, self.zone_name)  # type: ignore[arg-type]
        return None if t is None else t + offset * 60.0


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
