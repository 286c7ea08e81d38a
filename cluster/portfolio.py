"""Positions and P&L from fills, average-cost method, keyed by (strategy, symbol).

Conventions:

* `Position.realized_pnl` is gross of fees: it is what the price moves earned.
  Fees accumulate separately in `Position.fees` and are subtracted only in
  `net_realized()` (and `total_pnl()`), so fee drag and trading edge can be
  read apart.
* Average cost: adding to a position moves `avg_price` to the quantity-weighted
  average; reducing realizes (fill price - avg_price) * closed qty * direction
  and leaves `avg_price` alone; a fill that goes through zero closes the old
  position and opens the rest at the fill price. A flat position has
  `avg_price` 0.
* Hence, for any sequence of fills and a mark m:
  realized + unrealized(m) - fees == sum(-sign * price * qty) - sum(fee) + qty * m
  (the cash-flow P&L), which the tests check.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from cluster.messages import Fill, Position

ZERO_TOLERANCE = 1e-12
"""Relative to the quantities involved: a position this close to zero after a fill is flat."""


class Portfolio:
    """In-memory positions of one gateway (or of a journal replay); nothing here does I/O."""

    def __init__(self) -> None:
        self._positions: dict[tuple[str, str], Position] = {}
        self._marks: dict[str, float] = {}
        self._max_abs: dict[str, float] = {}

    def apply_fill(self, fill: Fill) -> Position:
        """Book one fill and return a snapshot of the position it produced (safe to keep or send)."""
        return msgspec.structs.replace(self.record_fill(fill))

    def record_fill(self, fill: Fill) -> Position:
        """Book one fill; return the live position, which the next fill changes (`apply_fill` copies it).

        For callers that keep no snapshot (risk's loss monitor, backtests): one copy less per fill.
        """
        qty = fill.qty
        if not qty > 0.0:
            raise ValueError(f"fill {fill.trade_id}: quantity {qty!r} must be positive")
        symbol = fill.symbol
        price = fill.price
        key = (fill.strategy, symbol)
        pos = self._positions.get(key)
        if pos is None:
            pos = self._positions[key] = Position(strategy=fill.strategy, venue=fill.venue, symbol=symbol)
        signed = fill.side.sign * qty
        old = pos.qty
        new = old + signed
        if abs(new) <= ZERO_TOLERANCE * max(abs(old), qty):
            new = 0.0
        if old == 0.0 or (old > 0.0) == (signed > 0.0):
            pos.avg_price = (abs(old) * pos.avg_price + qty * price) / abs(new)
        else:
            closed = min(qty, abs(old))
            pos.realized_pnl += closed * (price - pos.avg_price) * (1.0 if old > 0.0 else -1.0)
            if new == 0.0:
                pos.avg_price = 0.0
            elif (new > 0.0) != (old > 0.0):
                pos.avg_price = price
        pos.qty = new
        pos.fees += fill.fee
        pos.volume += price * qty
        pos.fills += 1
        net = abs(self.net_qty(symbol))
        if net > self._max_abs.get(symbol, 0.0):
            self._max_abs[symbol] = net
        return pos

    def load(self, positions: Iterable[Position], max_abs: dict[str, float] | None = None) -> None:
        """Replace every position with stored ones (a restarted gateway rebuilding from Redis).

        The all-time max |net qty| is not derivable from positions; pass the stored `max_abs` to keep
        it, otherwise it restarts from the loaded net quantities. Marks are kept.
        """
        self._positions = {(p.strategy, p.symbol): msgspec.structs.replace(p) for p in positions}
        self._max_abs = dict(max_abs or {})
        for symbol in {p.symbol for p in self._positions.values()}:
            self._max_abs[symbol] = max(self._max_abs.get(symbol, 0.0), abs(self.net_qty(symbol)))

    # -- reading -----------------------------------------------------------------------------------
    def position(self, strategy: str, symbol: str) -> Position:
        """A snapshot; a flat empty position if this strategy never traded the symbol."""
        pos = self._positions.get((strategy, symbol))
        if pos is None:
            return Position(strategy=strategy, venue="", symbol=symbol)
        return msgspec.structs.replace(pos)

    def positions(self) -> list[Position]:
        return [msgspec.structs.replace(p) for p in self._positions.values()]

    def live_positions(self) -> Iterable[Position]:
        """The positions themselves, not snapshots: to read at once, without a copy each (backtest sampling)."""
        return self._positions.values()

    def net_qty(self, symbol: str) -> float:
        """Net quantity of `symbol` over every strategy."""
        return sum(p.qty for p in self._positions.values() if p.symbol == symbol)

    def max_abs_net(self, symbol: str) -> float:
        """Largest |net qty| of `symbol` ever seen after a fill: the number position limits are audited against."""
        return self._max_abs.get(symbol, 0.0)

    def max_abs_positions(self) -> dict[str, float]:
        return dict(self._max_abs)

    def set_mark(self, symbol: str, price: float) -> None:
        self._marks[symbol] = price

    def mark(self, symbol: str) -> float | None:
        return self._marks.get(symbol)

    def unrealized_pnl(self, symbol: str | None = None) -> float:
        """Open P&L at the latest marks; symbols without a mark contribute 0."""
        return sum(p.unrealized(self._marks.get(p.symbol)) for p in self._select(symbol))

    def realized_pnl(self, symbol: str | None = None) -> float:
        """Realized P&L gross of fees."""
        return sum(p.realized_pnl for p in self._select(symbol))

    def fees(self, symbol: str | None = None) -> float:
        return sum(p.fees for p in self._select(symbol))

    def net_realized(self, symbol: str | None = None) -> float:
        """Realized P&L after fees."""
        return self.realized_pnl(symbol) - self.fees(symbol)

    def total_pnl(self, symbol: str | None = None) -> float:
        """Realized + unrealized - fees."""
        return self.net_realized(symbol) + self.unrealized_pnl(symbol)

    def _select(self, symbol: str | None) -> list[Position]:
        return [p for p in self._positions.values() if symbol is None or p.symbol == symbol]
