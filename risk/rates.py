"""Message rates over sliding windows and the duplicate-order filter, both O(1) amortized per order.

A window is a deque of event times: old events drop off the left as time moves on,
so the count is the deque's length. Only approved orders and cancels are counted
(a throttled strategy is not kept throttled by its own refused attempts).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable

SECOND_NS = 1_000_000_000
MINUTE_NS = 60 * SECOND_NS


class RateCounter:
    """Events in the last second and the last minute for one key (a strategy or a venue)."""

    __slots__ = ("second", "minute")

    def __init__(self) -> None:
        self.second: deque[int] = deque()
        self.minute: deque[int] = deque()

    def counts(self, now: int) -> tuple[int, int]:
        sec, mnt = self.second, self.minute
        lo = now - SECOND_NS
        while sec and sec[0] <= lo:
            sec.popleft()
        lo = now - MINUTE_NS
        while mnt and mnt[0] <= lo:
            mnt.popleft()
        return len(sec), len(mnt)

    def add(self, now: int) -> None:
        self.second.append(now)
        self.minute.append(now)


class RateBook:
    """Rate counters by key, created on first use."""

    def __init__(self) -> None:
        self.counters: dict[Hashable, RateCounter] = {}

    def get(self, key: Hashable) -> RateCounter:
        c = self.counters.get(key)
        if c is None:
            c = self.counters[key] = RateCounter()
        return c

    def counts(self, key: Hashable, now: int) -> tuple[int, int]:
        c = self.counters.get(key)
        return (0, 0) if c is None else c.counts(now)

    def add(self, key: Hashable, now: int) -> None:
        self.get(key).add(now)


class DuplicateFilter:
    """When each (strategy, symbol, side, price, qty) was last approved; entries older than `horizon_ns` are pruned."""

    def __init__(self, horizon_ns: int = MINUTE_NS) -> None:
        self.horizon_ns = horizon_ns
        self.last: dict[Hashable, int] = {}
        self.order: deque[tuple[int, Hashable]] = deque()

    def age_ns(self, key: Hashable, now: int) -> int | None:
        ts = self.last.get(key)
        return None if ts is None else now - ts

    def add(self, key: Hashable, now: int) -> None:
        self.last[key] = now
        self.order.append((now, key))
        lo = now - self.horizon_ns
        order, last = self.order, self.last
        while order and order[0][0] <= lo:
            ts, k = order.popleft()
            if last.get(k) == ts:
                del last[k]
