"""The interface every venue implements for the gateway: paper, Binance spot, Alpaca.

An adapter translates; it owns no order state. It turns the gateway's `Order`
into the venue's request and the venue's answers (REST responses, stream
events, query results) into `ExecutionReport`s, which the gateway applies
through the one `OrderStateMachine`. The error types say what the gateway may
conclude:

* `VenueTimeout`: the request may or may not have reached the venue -> UNKNOWN,
  resolved by `query` with the client order id, never by sending again.
* `NotSent`: nothing left this process, or the venue provably refused it
  before acting (429/418). With `retry_after_s` set (a rate limit: our own
  counter, a 429 back-off, a 418 ban), the same request may be sent again after
  that long; the gateway retries a new order with the same client order id
  while its timeout allows, else rejects it locally.
* `DuplicateOrder`: the venue already has an order with this client order id
  (a retry whose first attempt did arrive) -> resolved by query, like UNKNOWN.
* `VenueRejected`: the venue answered no, with its message.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from cluster.messages import BookUpdate, ExecutionReport, Fill, Order, OrderStatus, OrderType, now_ns
from gateways.paper import UNKNOWN_ORDER, PaperVenue
from gateways.rate_limit import LimitStatus


class VenueError(Exception):
    """Base of what an adapter raises."""


class VenueTimeout(VenueError):
    """No answer in time (or a 5xx): the venue may have acted."""


class NotSent(VenueError):
    """The request did not reach the venue, or was refused before the venue acted on it.

    `retry_after_s`: set when a rate limit refused it (429 back-off, 418 ban, our own counter); the
    request may be repeated after that many seconds. None: no point in repeating it by itself.
    """

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DuplicateOrder(VenueError):
    """The venue already holds an order with this client order id: query it, never send again."""


class VenueRejected(VenueError):
    def __init__(self, code: int | str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


class OrderNotFound(VenueError):
    """The venue has no order with this client order id."""


@dataclass
class VenueOrder:
    """What the venue says about one order, with the fills it could list (each with the venue trade id)."""

    client_order_id: str
    symbol: str
    status: OrderStatus
    filled_qty: float
    venue_order_id: str | None = None
    reason: str = ""
    fills: list[Fill] = field(default_factory=list)
    side: str = ""
    qty: float = 0.0
    price: float | None = None


@dataclass
class VenueTrade:
    """One execution from the venue's trade history (Binance myTrades, Alpaca FILL activities).

    `fill.client_order_id` is empty when the venue's list does not carry it; the reconciler maps
    `venue_order_id` to the order. `fill.strategy` is always empty here.
    """

    fill: Fill
    venue_order_id: str


ReportSink = Callable[[list[ExecutionReport]], None]


class VenueAdapter(abc.ABC):
    """One venue as the gateway sees it. Streams push into `on_reports`; a stream reconnect calls `on_reconnect`."""

    name: str = ""
    wants_books: bool = False
    """True for venues that match against the feed's books (paper)."""
    not_found_grace_s: float = 5.0
    """An order the venue does not know yet may still be in flight this long after it was sent."""

    def __init__(self) -> None:
        self.on_reports: ReportSink = lambda reports: None
        self.on_reconnect: Callable[[], None] = lambda: None
        self.on_limit: Callable[[LimitStatus], None] = lambda status: None

    async def start(self) -> None:
        """Connect (sessions, user stream). Called once before the first order."""
        return None

    async def close(self) -> None:
        """Release connections."""
        return None

    @abc.abstractmethod
    async def submit(self, order: Order) -> list[ExecutionReport]:
        """Send a new order; return what the venue's answer says (ack, fills, reject)."""

    @abc.abstractmethod
    async def cancel(self, order: Order) -> list[ExecutionReport]:
        """Cancel by client order id; return the venue's answer."""

    @abc.abstractmethod
    async def query(self, order: Order) -> VenueOrder:
        """The venue's truth about one order, by client order id, with its fills; raise OrderNotFound."""

    async def open_orders(self) -> list[VenueOrder]:
        return []

    async def trades_since(self, since_ns: int, symbols: list[str], cursors: dict[str, str]
                           ) -> tuple[list[VenueTrade], dict[str, str]]:
        """Every execution of this account since `since_ns` (for `symbols` where the venue needs one),
        oldest first, and the cursors to start from next time.

        `cursors` are what the previous call returned (e.g. Binance's last trade id per symbol); a venue
        uses them instead of the time where it can. Reconciliation de-duplicates by trade id.
        """
        return [], {}

    async def order_by_venue_id(self, symbol: str, venue_order_id: str) -> VenueOrder:
        """The venue's order by its own id (to name the client order id of a listed trade); raise OrderNotFound."""
        raise OrderNotFound(venue_order_id)

    async def positions(self) -> dict[str, float] | None:
        """Net position per symbol as the venue keeps it, or None where it keeps none (Binance spot: balances)."""
        return None

    async def balances(self) -> dict[str, float]:
        return {}

    def on_book(self, update: BookUpdate) -> list[ExecutionReport]:
        return []

    orders_survive_restart: bool = True
    """False for the in-process paper venue: orders it never acknowledged are lost with the process."""

    def restore_order(self, order: Order) -> bool:
        """Hand an open order from Redis back to the venue model; True if the venue still knows it.

        Real venues keep their orders across our restarts (reconciliation checks them); the paper
        venue lives in this process and must be given them back.
        """
        return True


def report(order: Order, status: OrderStatus, fill: Fill | None = None, reason: str = "",
           filled_qty: float | None = None) -> ExecutionReport:
    return ExecutionReport(client_order_id=order.client_order_id, strategy=order.strategy, venue=order.venue,
                           symbol=order.symbol, status=status, side=order.side, order_qty=order.qty,
                           filled_qty=order.filled_qty if filled_qty is None else filled_qty, price=order.price,
                           fill=fill, reason=reason, ts_ns=now_ns())


def venue_says_filled(status: OrderStatus, venue_filled: float, filled: float) -> bool:
    """The venue reports the order FILLED and `filled` (what we count) is all of it."""
    return status is OrderStatus.FILLED and filled >= venue_filled * (1 - 1e-9) and filled > 0.0


def reports_from_truth(order: Order, truth: VenueOrder) -> list[ExecutionReport]:
    """Reports that bring `order` to what the venue says: each listed fill (the gateway drops ones it has), then the status.

    A FILLED status is carried by the fills themselves (the last one says FILLED when the venue does and
    the fills add up to the venue's filled quantity: that is what completes a notional order); a terminal
    status is reported last, so every fill is applied before the order closes.
    """
    out: list[ExecutionReport] = []
    filled = 0.0
    fills = sorted(truth.fills, key=lambda f: f.ts_ns)
    for i, f in enumerate(fills):
        filled += f.qty
        if order.notional is not None:
            done = i == len(fills) - 1 and venue_says_filled(truth.status, truth.filled_qty, filled)
        else:
            done = filled >= order.qty * (1 - 1e-9)
        out.append(report(order, OrderStatus.FILLED if done else OrderStatus.PARTIALLY_FILLED, fill=f, filled_qty=filled))
    if truth.status is OrderStatus.FILLED and order.notional is not None:
        # The venue's word on its own: completes a notional order whose fills all arrived earlier.
        out.append(report(order, OrderStatus.FILLED, reason=truth.reason, filled_qty=truth.filled_qty))
    if truth.status is not OrderStatus.FILLED:
        status = truth.status
        if status is OrderStatus.NEW and truth.filled_qty > 0:
            status = OrderStatus.PARTIALLY_FILLED
        out.append(report(order, status, reason=truth.reason, filled_qty=truth.filled_qty))
    return out


class PaperAdapter(VenueAdapter):
    """The spine's paper venue behind the adapter interface: in-process, answers at once, never times out."""

    wants_books = True
    not_found_grace_s = 0.0
    orders_survive_restart = False

    def __init__(self, name: str, maker_fee_bps: float, taker_fee_bps: float, trade_id_prefix: str) -> None:
        super().__init__()
        self.name = name
        self.venue = PaperVenue(maker_fee_bps, taker_fee_bps, trade_id_prefix=trade_id_prefix)

    async def submit(self, order: Order) -> list[ExecutionReport]:
        # The matcher fills a notional order's quantity estimate and says FILLED when it has; the
        # gateway's state machine then completes the notional order on that word.
        return self.venue.submit(msgspec.structs.replace(order, notional=None) if order.notional is not None
                                 else order)

    async def cancel(self, order: Order) -> list[ExecutionReport]:
        return self.venue.cancel(order.client_order_id)

    async def query(self, order: Order) -> VenueOrder:
        for o in self.venue.open_orders():
            if o.client_order_id == order.client_order_id:
                return VenueOrder(o.client_order_id, o.symbol, o.status, o.filled_qty, venue_order_id=o.venue_order_id)
        raise OrderNotFound(order.client_order_id)

    async def open_orders(self) -> list[VenueOrder]:
        return [VenueOrder(o.client_order_id, o.symbol, o.status, o.filled_qty) for o in self.venue.open_orders()]

    def on_book(self, update: BookUpdate) -> list[ExecutionReport]:
        return self.venue.on_book(update)

    def restore_order(self, order: Order) -> bool:
        """The paper venue forgot everything: acknowledged open orders go back to rest, others are lost."""
        if order.status in (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED, OrderStatus.PENDING_CANCEL) and \
                order.order_type is OrderType.LIMIT and order.price is not None:
            self.venue.restore(msgspec.structs.replace(
                order, status=OrderStatus.NEW if order.filled_qty == 0 else OrderStatus.PARTIALLY_FILLED))
            return True
        return False

    def is_unknown_order(self, r: ExecutionReport) -> bool:
        return r.status is OrderStatus.REJECTED and r.reason == UNKNOWN_ORDER


def monotonic_s() -> float:
    return time.monotonic()
