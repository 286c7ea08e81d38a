"""Conflation between a feed and one subscriber: the latest book per symbol, never a growing queue.

A feed keeps one `SubscriberChannel` per subscriber and at most one delivery in
flight to it. Book updates that arrive while a delivery is in flight replace the
pending one (counted in `skipped`); trades are kept, up to a bound, because they
cannot be conflated without losing volume.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from cluster.messages import BookUpdate, Trade


@dataclass
class Delivery:
    books: list[BookUpdate]
    trades: list[Trade]
    skipped: int
    trades_dropped: int


@dataclass
class SubscriberChannel:
    name: str
    handle: Any = None
    max_trades: int = 1000
    books: dict[str, BookUpdate] = field(default_factory=dict)
    trades: deque[Trade] = field(default_factory=deque)
    skipped: int = 0
    trades_dropped: int = 0
    delivered: int = 0
    in_flight: Any = None
    last_sent: float = 0.0  # monotonic time of the last delivery

    def offer_book(self, update: BookUpdate) -> None:
        if update.symbol in self.books:
            self.skipped += 1
        self.books[update.symbol] = update

    def offer_trade(self, trade: Trade) -> None:
        if len(self.trades) >= self.max_trades:
            self.trades.popleft()
            self.trades_dropped += 1
        self.trades.append(trade)

    @property
    def has_pending(self) -> bool:
        return bool(self.books) or bool(self.trades)

    def take(self) -> Delivery:
        """Everything pending, as one delivery; the channel is empty afterwards."""
        d = Delivery(list(self.books.values()), list(self.trades), self.skipped, self.trades_dropped)
        self.books.clear()
        self.trades.clear()
        self.skipped = 0
        self.trades_dropped = 0
        self.delivered += 1
        return d
