"""An L2 order book for one symbol: price -> quantity per side, best level first.

This sits on the feed's hot path (every depth event touches it). Most events resize levels
that already exist, so each side is a plain `dict` (price -> qty), where a resize is one dict
assignment, plus a plain `list` of its prices kept sorted with `bisect` (C code), touched only
when a level appears or disappears. Both lists are ascending with the best level *last*: bids
hold prices, asks hold negated prices. Levels come and go mostly near the touch, so an
insert or delete there moves a handful of list slots instead of the whole side.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections.abc import Iterable

from cluster.messages import BookUpdate

_INF = math.inf

Level = tuple[float, float]


def _check(price: float, qty: float) -> None:
    """Reject what no venue can send: a price that is not finite and positive, a quantity that is not finite and >= 0.

    Written as positive comparisons so NaN (which compares false to everything) fails too.
    """
    if not (0.0 < price < _INF):
        raise ValueError(f"invalid price {price!r}: must be finite and > 0")
    if not (0.0 <= qty < _INF):
        raise ValueError(f"invalid quantity {qty!r}: must be finite and >= 0")


class OrderBook:
    """L2 book of one symbol. Quantities are absolute (venue semantics): setting 0 removes the level."""

    __slots__ = ("symbol", "venue", "_bids", "_asks", "_bid_px", "_ask_px")

    def __init__(self, symbol: str, venue: str = "") -> None:
        self.symbol = symbol
        self.venue = venue
        self._bids: dict[float, float] = {}  # price -> qty
        self._asks: dict[float, float] = {}  # price -> qty
        self._bid_px: list[float] = []  # the bid prices, ascending: [-1] is the best (highest) bid
        self._ask_px: list[float] = []  # the ask prices negated, ascending: -[-1] is the best (lowest) ask

    # ------------------------------------------------------------------ updates

    def load_snapshot(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        """Replace the whole book. Validated before anything changes, so a bad snapshot leaves the book as it was.

        Levels with quantity 0 are skipped (a snapshot has no removals to express).
        """
        new_bids: dict[float, float] = {}
        new_asks: dict[float, float] = {}
        for price, qty in bids:
            price = float(price)
            qty = float(qty)
            _check(price, qty)
            if qty:
                new_bids[price] = qty
        for price, qty in asks:
            price = float(price)
            qty = float(qty)
            _check(price, qty)
            if qty:
                new_asks[price] = qty
        self._bids = new_bids
        self._asks = new_asks
        self._bid_px = sorted(new_bids)
        self._ask_px = sorted([-p for p in new_asks])

    def apply(self, side_is_bid: bool, price: float, qty: float) -> None:
        """Set one level to an absolute quantity; 0 removes it (removing an absent level is normal, not an error)."""
        if not (0.0 < price < _INF):
            raise ValueError(f"invalid price {price!r}: must be finite and > 0")
        if not (0.0 <= qty < _INF):
            raise ValueError(f"invalid quantity {qty!r}: must be finite and >= 0")
        if side_is_bid:
            book, px, key = self._bids, self._bid_px, price
        else:
            book, px, key = self._asks, self._ask_px, -price
        if qty:
            if price not in book:
                insort(px, key)
            book[price] = qty
        elif price in book:
            del book[price]
            del px[bisect_left(px, key)]

    def apply_levels(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        """Apply one venue event's changed levels to both sides.

        All levels are validated first, so an event with one bad level is rejected whole
        instead of leaving a half-applied (and therefore wrong) book.
        """
        if type(bids) is not list:
            bids = list(bids)
        if type(asks) is not list:
            asks = list(asks)
        for price, qty in bids:
            if not (0.0 < price < _INF and 0.0 <= qty < _INF):
                _check(price, qty)
        for price, qty in asks:
            if not (0.0 < price < _INF and 0.0 <= qty < _INF):
                _check(price, qty)
        book = self._bids
        px = self._bid_px
        for price, qty in bids:
            if qty:
                if price not in book:
                    insort(px, price)
                book[price] = qty
            elif price in book:
                del book[price]
                del px[bisect_left(px, price)]
        book = self._asks
        px = self._ask_px
        for price, qty in asks:
            if qty:
                if price not in book:
                    insort(px, -price)
                book[price] = qty
            elif price in book:
                del book[price]
                del px[bisect_left(px, -price)]

    def clear(self) -> None:
        """Drop every level (a book that lost sync must not be read)."""
        self._bids.clear()
        self._asks.clear()
        self._bid_px.clear()
        self._ask_px.clear()

    # ------------------------------------------------------------------ reads

    def __len__(self) -> int:
        return len(self._bids) + len(self._asks)

    def best_bid(self) -> Level | None:
        """(price, qty) of the highest bid, or None when the side is empty."""
        px = self._bid_px
        if not px:
            return None
        p = px[-1]
        return (p, self._bids[p])

    def best_ask(self) -> Level | None:
        """(price, qty) of the lowest ask, or None when the side is empty."""
        px = self._ask_px
        if not px:
            return None
        p = -px[-1]
        return (p, self._asks[p])

    def mid(self) -> float | None:
        """Arithmetic mid of the touch; None unless both sides have a level."""
        if not self._bid_px or not self._ask_px:
            return None
        return (self._bid_px[-1] - self._ask_px[-1]) / 2.0

    def spread(self) -> float | None:
        """Best ask minus best bid (negative when crossed); None unless both sides have a level."""
        if not self._bid_px or not self._ask_px:
            return None
        return -self._ask_px[-1] - self._bid_px[-1]

    def microprice(self) -> float | None:
        """Size-weighted mid: leans toward the side with less size, where the price is more likely to go next."""
        if not self._bid_px or not self._ask_px:
            return None
        bid = self._bid_px[-1]
        ask = -self._ask_px[-1]
        bid_qty = self._bids[bid]
        ask_qty = self._asks[ask]
        return (bid * ask_qty + ask * bid_qty) / (bid_qty + ask_qty)

    def imbalance(self, levels: int = 5) -> float:
        """(bid volume - ask volume) / total over the best `levels` per side, in [-1, 1]; 0.0 when there is no volume."""
        if levels <= 0:
            raise ValueError("levels must be >= 1")
        bids = self._bids
        asks = self._asks
        bid_vol = sum([bids[p] for p in self._bid_px[:-levels - 1:-1]])
        ask_vol = sum([asks[-k] for k in self._ask_px[:-levels - 1:-1]])
        total = bid_vol + ask_vol
        if total <= 0.0:
            return 0.0
        return (bid_vol - ask_vol) / total

    def depth_within_bps(self, bps: float) -> tuple[float, float]:
        """(bid volume, ask volume) priced within `bps` basis points of the mid: liquidity a taker can reach.

        (0.0, 0.0) when the book has no mid.
        """
        if not (0.0 <= bps < _INF):
            raise ValueError(f"bps must be finite and >= 0, got {bps!r}")
        mid = self.mid()
        if mid is None:
            return (0.0, 0.0)
        width = mid * bps / 10_000.0
        bids = self._bids
        asks = self._asks
        bpx = self._bid_px
        apx = self._ask_px
        # Bids priced >= mid - width and asks priced <= mid + width (asks negated: -price >= -(mid + width)),
        # summed best level first.
        bid_vol = sum([bids[p] for p in reversed(bpx[bisect_left(bpx, mid - width):])])
        ask_vol = sum([asks[-k] for k in reversed(apx[bisect_left(apx, -(mid + width)):])])
        return (bid_vol, ask_vol)

    def top(self, n: int) -> tuple[list[Level], list[Level]]:
        """Best `n` levels per side, best first: (bids, asks)."""
        if n <= 0:
            return ([], [])
        bids = self._bids
        asks = self._asks
        return ([(p, bids[p]) for p in self._bid_px[:-n - 1:-1]],
                [(-k, asks[-k]) for k in self._ask_px[:-n - 1:-1]])

    def is_crossed(self) -> bool:
        """Best bid >= best ask: impossible on a healthy venue book, so a sign of a broken sync."""
        if not self._bid_px or not self._ask_px:
            return False
        return self._bid_px[-1] >= -self._ask_px[-1]

    def to_update(self, seq: int, depth: int, exchange_ts_ns: int = 0, receive_ts_ns: int = 0,
                  stale: bool = False) -> BookUpdate:
        """The top `depth` levels as the message the feed actor publishes; `crossed` is computed, never trusted."""
        bids, asks = self.top(depth)
        crossed = bool(bids) and bool(asks) and bids[0][0] >= asks[0][0]
        return BookUpdate(venue=self.venue, symbol=self.symbol, seq=seq, bids=bids, asks=asks,
                          exchange_ts_ns=exchange_ts_ns, receive_ts_ns=receive_ts_ns, crossed=crossed, stale=stale)

    def __repr__(self) -> str:
        return f"OrderBook({self.symbol!r}, bid={self.best_bid()}, ask={self.best_ask()}, levels={len(self)})"
