"""Per-venue request limits: the venue's own counters, 429 back-off and Binance's 418 ban.

The venue is the authority on how much we have used: Binance reports it in
`X-MBX-USED-WEIGHT-1M` on every response, Alpaca in `X-RateLimit-Remaining`
(200 requests a minute). We stop short of the limit until the window rolls
over, back off for `Retry-After` on a 429, and on Binance's 418 (IP banned for
ignoring 429s) send nothing at all until the ban ends. `check()` is called
before every request, so a blocked venue costs no network round trip. What
to do with a refused request is the caller's: the gateway retries a new order
(same client order id) after `retry_after_s` when its timeout allows.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass


class LimitState(str, enum.Enum):
    OK = "ok"
    THROTTLED = "throttled"  # our own counter is at the venue's limit until the window rolls over
    BACKOFF = "backoff"  # the venue answered 429
    BANNED = "banned"  # Binance answered 418


class RateLimited(RuntimeError):
    """Nothing was sent: the venue is throttled, backing off or has banned us until `until` (monotonic s)."""

    def __init__(self, venue: str, state: LimitState, until: float, detail: str = "", now: float | None = None) -> None:
        self.venue = venue
        self.state = state
        self.until = until
        self.retry_after_s = max(until - (time.monotonic() if now is None else now), 0.0)
        super().__init__(f"{venue}: {state.value} for {self.retry_after_s:.1f}s{': ' + detail if detail else ''}")


@dataclass
class LimitStatus:
    venue: str
    state: LimitState
    used: int
    limit: int
    retry_after_s: float = 0.0


DEFAULT_RETRY_AFTER_S = 1.0
WINDOW_S = 60.0


class RateLimiter:
    """One venue's request budget. `kind` is 'binance' (weight) or 'alpaca' (requests)."""

    def __init__(self, venue: str, kind: str, limit_per_min: int, headroom: float = 0.95,
                 clock: Callable[[], float] = time.monotonic,
                 on_change: Callable[[LimitStatus], None] | None = None) -> None:
        self.venue = venue
        self.kind = kind
        self.limit = limit_per_min
        self.headroom = headroom
        self.clock = clock
        self.on_change = on_change
        self.used = 0
        self.window_start = clock()
        self.blocked_until = 0.0
        self.state = LimitState.OK
        self.counts = {"429": 0, "418": 0, "5xx": 0, "throttled": 0}

    def check(self, weight: int = 1) -> None:
        """Raise RateLimited if a request of `weight` must not be sent now; else count it."""
        now = self.clock()
        if now - self.window_start >= WINDOW_S:
            self.window_start = now - (now - self.window_start) % WINDOW_S
            self.used = 0
        if self.state is not LimitState.OK:
            if now < self.blocked_until:
                raise RateLimited(self.venue, self.state, self.blocked_until, now=now)
            self._set(LimitState.OK, 0.0)
        if self.used + weight > self.limit * self.headroom:
            self.counts["throttled"] += 1
            raise RateLimited(self.venue, LimitState.THROTTLED, self.window_start + WINDOW_S,
                              f"used {self.used} of {self.limit} this minute", now=now)
        self.used += weight

    def on_response(self, status: int, headers: Mapping[str, str]) -> None:
        """Read the venue's counters and act on 429/418."""
        if self.kind == "binance":
            w = headers.get("X-MBX-USED-WEIGHT-1M") or headers.get("x-mbx-used-weight-1m")
            if w is not None and w.isdigit():
                self.used = int(w)
        else:
            rem, lim = headers.get("X-RateLimit-Remaining"), headers.get("X-RateLimit-Limit")
            if lim is not None and lim.isdigit():
                self.limit = int(lim)
            if rem is not None and rem.isdigit():
                self.used = max(self.limit - int(rem), 0)
            reset = headers.get("X-RateLimit-Reset") or headers.get("x-ratelimit-reset")
            try:  # the venue's window ends at X-RateLimit-Reset (epoch seconds): follow its minute, not ours
                left = float(reset) - time.time() if reset is not None else None
            except ValueError:
                left = None
            if left is not None and 0.0 <= left <= WINDOW_S:
                self.window_start = self.clock() + left - WINDOW_S
        if status in (429, 418):
            self.counts[str(status)] += 1
            retry = _retry_after(headers, reset_header=self.kind == "alpaca")
            self._set(LimitState.BANNED if status == 418 else LimitState.BACKOFF, self.clock() + retry)
        elif status >= 500:
            self.counts["5xx"] += 1

    def _set(self, state: LimitState, until: float) -> None:
        changed = state is not self.state
        self.state, self.blocked_until = state, until
        if changed and self.on_change is not None:
            self.on_change(self.status())

    def status(self) -> LimitStatus:
        return LimitStatus(self.venue, self.state, self.used, self.limit,
                           round(max(self.blocked_until - self.clock(), 0.0), 3))


def _retry_after(headers: Mapping[str, str], reset_header: bool = False) -> float:
    """Seconds to wait: `Retry-After`, else (Alpaca) until `X-RateLimit-Reset` (epoch seconds), else a default."""
    raw = headers.get("Retry-After") or headers.get("retry-after")
    if raw is None and reset_header:
        reset = headers.get("X-RateLimit-Reset") or headers.get("x-ratelimit-reset")
        try:
            return min(max(float(reset) - time.time(), 0.0), WINDOW_S) if reset is not None else DEFAULT_RETRY_AFTER_S
        except ValueError:
            return DEFAULT_RETRY_AFTER_S
    try:
        return max(float(raw), 0.0) if raw is not None else DEFAULT_RETRY_AFTER_S
    except ValueError:
        return DEFAULT_RETRY_AFTER_S
