"""A paper venue that fills against the latest real (or simulated) L2 book.

Pure Python, no Ray and no I/O: the gateway actor owns latency, journaling and
retries; this class only decides what a venue would have done. Every status
change goes through `OrderStateMachine`, so paper trading exercises exactly the
rules a live venue adapter must obey.

Matching model:

* A taker walks the opposite side level by level (up to its limit; a MARKET
  order has none), one `Fill` per level at that level's price.
* A resting limit order fills as maker, at its own price, when the opposite
  side trades through it, for at most the quantity shown at levels within its
  limit. Resting orders are matched best price first, then oldest first.
* Liquidity consumed from a book is remembered until a book with a different
  `seq` arrives, so one snapshot can't fill the same quantity twice (across
  resting orders, takers, or a re-delivered update). A changed seq means fresh
  liquidity; seqs are not required to increase, so a restarted feed whose seq
  starts over still trades.
* The venue trusts the feed: `crossed`/`stale` flags are for strategies and risk.
"""

from __future__ import annotations

from cluster.messages import (
    BookUpdate,
    ExecutionReport,
    Fill,
    Liquidity,
    Order,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
    now_ns,
)
from gateways.order_state import FILL_TOLERANCE, OrderEvent, OrderStateMachine

IOC_REMAINDER = "ioc remainder"
UNKNOWN_ORDER = "unknown order"

# The members `submit` and the matching read on every order, as module names: in Python 3.11 `Side.BUY`
# costs a metaclass lookup (~0.2 us) each time.
_BUY = Side.BUY
_LIMIT, _MARKET = OrderType.LIMIT, OrderType.MARKET
_MAKER, _TAKER = Liquidity.MAKER, Liquidity.TAKER
_PENDING_NEW, _FILLED = OrderStatus.PENDING_NEW, OrderStatus.FILLED
_ACCEPTED, _CANCELED = OrderEvent.ACCEPTED, OrderEvent.CANCELED
_IOC = TimeInForce.IOC


class PaperVenue:
    """One venue's matching for every symbol it trades; not thread-safe (the actor serializes calls)."""

    def __init__(self, maker_fee_bps: float = 1.0, taker_fee_bps: float = 5.0, trade_id_prefix: str = "P") -> None:
        self.maker_fee_bps = maker_fee_bps
        self.taker_fee_bps = taker_fee_bps
        self.trade_id_prefix = trade_id_prefix
        self.sm = OrderStateMachine()
        self._books: dict[str, BookUpdate] = {}
        # symbol -> {(side of the resting liquidity, price): quantity already taken from the current seq}
        self._used: dict[str, dict[tuple[Side, float], float]] = {}
        self._resting: dict[str, Order] = {}
        self._trades = 0

    # -- market data -------------------------------------------------------------------------------
    def on_book(self, update: BookUpdate) -> list[ExecutionReport]:
        """Store the book and fill resting orders it trades through."""
        prev = self._books.get(update.symbol)
        if prev is None or prev.seq != update.seq:
            self._used[update.symbol] = {}
        self._books[update.symbol] = update
        if not self._resting:
            return []
        resting = [o for o in self._resting.values() if o.symbol == update.symbol]
        resting.sort(key=lambda o: -o.price if o.side is _BUY else o.price)  # type: ignore[operator]
        reports: list[ExecutionReport] = []
        for order in resting:
            taken = self._take(order.symbol, order.side, order.price, order.remaining, self._tol(order))
            qty = sum(q for _, q in taken)
            if qty <= 0.0:
                continue
            fill = self._fill(order, order.price, qty, _MAKER)  # type: ignore[arg-type]
            order = self.sm.apply_fill(order, fill)
            reports.append(self._report(order, fill))
            if order.status.is_terminal:
                del self._resting[order.client_order_id]
            else:
                self._resting[order.client_order_id] = order
        return reports

    def book(self, symbol: str) -> BookUpdate | None:
        return self._books.get(symbol)

    # -- orders ------------------------------------------------------------------------------------
    def submit(self, order: Order) -> list[ExecutionReport]:
        """Ack, take what the book offers as taker, then rest (GTC limit) or cancel (IOC/market) the rest.

        Invalid orders come back as one REJECTED report. Raises ValueError if `order` is not
        PENDING_NEW or its id is already resting: that is a caller bug, not a venue answer.
        """
        if order.status is not _PENDING_NEW:
            raise ValueError(f"order {order.client_order_id} must be pending_new, is {order.status.value}")
        if order.client_order_id in self._resting:
            raise ValueError(f"order {order.client_order_id} is already resting")
        problem = self._reject_reason(order)
        if problem:
            return [self._report(self.sm.transition(order, OrderEvent.REJECTED, problem), reason=problem)]
        order = self.sm.transition(order, _ACCEPTED)
        reports = [self._report(order)]
        limit = order.price if order.order_type is _LIMIT else None
        for price, qty in self._take(order.symbol, order.side, limit, order.remaining, self._tol(order)):
            fill = self._fill(order, price, qty, _TAKER)
            order = self.sm.apply_fill(order, fill)
            reports.append(self._report(order, fill))
        if order.status is _FILLED:
            return reports
        if order.order_type is _MARKET or order.tif is _IOC:
            order = self.sm.transition(order, _CANCELED, IOC_REMAINDER)
            reports.append(self._report(order, reason=IOC_REMAINDER))
        else:
            self._resting[order.client_order_id] = order
        return reports

    def cancel(self, client_order_id: str) -> list[ExecutionReport]:
        """Cancel a resting order.

        An id that is not resting (never seen, already filled or canceled) does not raise: it answers
        with one REJECTED report, reason "unknown order", whose order fields are empty, like a real
        venue's cancel-reject. Not raising keeps a cancel that lost a race with a fill from crashing
        the caller's task; the state machine refuses that REJECTED for any order that is not
        PENDING_CANCEL.
        """
        order = self._resting.pop(client_order_id, None)
        if order is None:
            return [ExecutionReport(client_order_id=client_order_id, strategy="", venue="", symbol="",
                                    status=OrderStatus.REJECTED, side=Side.BUY, order_qty=0.0,
                                    reason=UNKNOWN_ORDER, ts_ns=now_ns())]
        order = self.sm.transition(order, OrderEvent.CANCELED, "canceled")
        return [self._report(order, reason="canceled")]

    def restore(self, order: Order) -> None:
        """Put an acknowledged open limit order back to rest; it matches from the next book on."""
        if order.status not in (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED):
            raise ValueError(f"order {order.client_order_id}: only new or partially filled orders rest, "
                             f"not {order.status.value}")
        if order.order_type is not OrderType.LIMIT or order.price is None:
            raise ValueError(f"order {order.client_order_id}: only limit orders with a price rest")
        if order.remaining <= self._tol(order):
            raise ValueError(f"order {order.client_order_id}: nothing left to fill")
        if order.client_order_id in self._resting:
            raise ValueError(f"order {order.client_order_id} is already resting")
        self._resting[order.client_order_id] = order

    def open_orders(self) -> list[Order]:
        return list(self._resting.values())

    # -- internals ---------------------------------------------------------------------------------
    def _reject_reason(self, order: Order) -> str:
        book = self._books.get(order.symbol)
        if book is None:
            return f"no book for {order.symbol}"
        if not order.qty > 0.0:
            return f"quantity {order.qty!r} must be positive"
        if order.order_type is _LIMIT:
            if order.price is None:
                return "limit order without a price"
            if not order.price > 0.0:
                return f"limit price {order.price!r} must be positive"
        elif not self._levels(order.symbol, order.side, None):
            return "no opposite liquidity for a market order"
        return ""

    def _levels(self, symbol: str, side: Side, limit: float | None) -> list[tuple[float, float]]:
        """Opposite-side levels an order of `side` could take, best first, net of what this seq already gave."""
        book = self._books[symbol]
        used = self._used[symbol]
        liquidity_side = side.opposite
        buy = side is _BUY
        out = []
        for price, qty in sorted(book.asks) if buy else sorted(book.bids, reverse=True):
            if limit is not None and (price > limit if buy else price < limit):
                break
            avail = qty - used.get((liquidity_side, price), 0.0)
            if avail > 0.0:
                out.append((price, avail))
        return out

    def _take(self, symbol: str, side: Side, limit: float | None, want: float, tol: float) -> list[tuple[float, float]]:
        """Consume up to `want` from the levels within `limit`, recording it against the current seq."""
        used = self._used[symbol]
        liquidity_side = side.opposite
        taken: list[tuple[float, float]] = []
        left = want
        for price, avail in self._levels(symbol, side, limit):
            if left <= tol:
                break
            qty = min(avail, left)
            key = (liquidity_side, price)
            used[key] = used.get(key, 0.0) + qty
            taken.append((price, qty))
            left -= qty
        return taken

    @staticmethod
    def _tol(order: Order) -> float:
        return FILL_TOLERANCE * abs(order.qty)

    def _fill(self, order: Order, price: float, qty: float, liquidity: Liquidity) -> Fill:
        self._trades += 1
        bps = self.maker_fee_bps if liquidity is _MAKER else self.taker_fee_bps
        return Fill(client_order_id=order.client_order_id, trade_id=f"{self.trade_id_prefix}-{self._trades}",
                    strategy=order.strategy, venue=order.venue, symbol=order.symbol, side=order.side,
                    price=price, qty=qty, fee=price * qty * bps / 1e4, liquidity=liquidity, ts_ns=now_ns())

    @staticmethod
    def _report(order: Order, fill: Fill | None = None, reason: str = "") -> ExecutionReport:
        return ExecutionReport(client_order_id=order.client_order_id, strategy=order.strategy, venue=order.venue,
                               symbol=order.symbol, status=order.status, side=order.side, order_qty=order.qty,
                               filled_qty=order.filled_qty, price=order.price, fill=fill, reason=reason,
                               ts_ns=now_ns())
