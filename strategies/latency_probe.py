"""A strategy that measures the order path, not the market: every `every_n` book updates of a symbol it
places a small buy far below the touch (it never fills) and cancels the one before. Used by
`make bench` for tick-to-order latency through feed -> strategy -> risk -> gateway."""

from __future__ import annotations

from typing import ClassVar

from cluster.messages import BookUpdate, OrderIntent, Side
from strategies.base import Strategy


class LatencyProbe(Strategy):
    defaults: ClassVar[dict] = {"every_n": 10, "notional": 20.0, "distance_bps": 200.0}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seen: dict[str, int] = {}

    def on_book(self, update: BookUpdate) -> list[OrderIntent]:
        n = self.seen[update.symbol] = self.seen.get(update.symbol, 0) + 1
        if n % int(self.params["every_n"]) or update.best_bid is None:
            return []
        # The new order goes first, so its tick-to-order does not include the cancel's round trip.
        cancels = [self.cancel(coid) for coid in self.working_orders(update.symbol)]
        out: list[OrderIntent] = []
        price = update.best_bid * (1 - self.params["distance_bps"] / 1e4)
        tick = update.bids[0][0] - update.bids[1][0] if len(update.bids) > 1 else 0.0
        if tick > 0:
            price = round(round(price / tick) * tick, 10)
        qty = self.round_qty(update.symbol, self.params["notional"] / price)
        if qty > 0:
            out.append(self.limit(update.symbol, Side.BUY, qty, price, tag="probe"))
        return out + cancels
