"""The one order state machine every venue adapter (paper, Binance, Alpaca) goes through.

A venue is never trusted to send a sensible sequence: acks arrive after fills,
cancels race fills, requests time out. Funnelling every status change through
one explicit table means a venue-specific bug shows up as an `InvalidTransition`
in the gateway's log instead of as a silently corrupted order.

Conventions worth knowing:

* A partial fill while a cancel is pending keeps the order PENDING_CANCEL: the
  cancel is still in flight, and leaving that state would invite a second one.
* A late ack (ACCEPTED after a fill, or after a cancel was requested) is
  absorbed without changing the state.
* TIMED_OUT (no answer in time) moves any live order to UNKNOWN. UNKNOWN is
  resolved by querying the venue with the client order id and applying what it
  says; every venue-reported state is allowed from UNKNOWN except SUBMIT, since
  a fresh PENDING_NEW is what makes a gateway send an order, and an order whose
  fate is unknown must never be sent again.
* REJECTED from PENDING_CANCEL exists for "the venue has no such order"
  (a cancel sent before the order arrived, or after it was lost). A venue
  adapter must not map an ordinary cancel-reject of a live order to REJECTED.
* A notional order (an amount of quote currency: Alpaca `notional`, Binance
  `quoteOrderQty`) carries risk's *estimate* of its quantity in `qty`. Its fills
  may add up to more or less than that, so fills never complete it by
  quantity: it is FILLED when the venue says so (`apply_fill(..., venue_done=True)`
  or `complete_notional`), and its `qty` then becomes what was really filled.
"""

from __future__ import annotations

import enum

import msgspec

from cluster.messages import Fill, Order, OrderStatus, now_ns

FILL_TOLERANCE = 1e-12
"""Relative to the order quantity: a fill this close to the remainder completes the order."""


class OrderEvent(str, enum.Enum):
    SUBMIT = "submit"
    ACCEPTED = "accepted"
    PARTIAL_FILL = "partial_fill"
    FILL = "fill"
    CANCEL_REQUESTED = "cancel_requested"
    CANCELED = "canceled"
    REJECTED = "rejected"
    EXPIRED = "expired"
    TIMED_OUT = "timed_out"


_S = OrderStatus
_E = OrderEvent

TRANSITIONS: dict[tuple[OrderStatus, OrderEvent], OrderStatus] = {
    # A fresh order being stamped as submitted; freshness is checked in `transition`.
    (_S.PENDING_NEW, _E.SUBMIT): _S.PENDING_NEW,
    (_S.PENDING_NEW, _E.ACCEPTED): _S.NEW,
    (_S.PENDING_NEW, _E.PARTIAL_FILL): _S.PARTIALLY_FILLED,
    (_S.PENDING_NEW, _E.FILL): _S.FILLED,
    (_S.PENDING_NEW, _E.CANCEL_REQUESTED): _S.PENDING_CANCEL,
    (_S.PENDING_NEW, _E.CANCELED): _S.CANCELED,
    (_S.PENDING_NEW, _E.REJECTED): _S.REJECTED,
    (_S.PENDING_NEW, _E.EXPIRED): _S.EXPIRED,
    (_S.PENDING_NEW, _E.TIMED_OUT): _S.UNKNOWN,
    (_S.NEW, _E.ACCEPTED): _S.NEW,
    (_S.NEW, _E.PARTIAL_FILL): _S.PARTIALLY_FILLED,
    (_S.NEW, _E.FILL): _S.FILLED,
    (_S.NEW, _E.CANCEL_REQUESTED): _S.PENDING_CANCEL,
    (_S.NEW, _E.CANCELED): _S.CANCELED,
    (_S.NEW, _E.EXPIRED): _S.EXPIRED,
    (_S.NEW, _E.TIMED_OUT): _S.UNKNOWN,
    (_S.PARTIALLY_FILLED, _E.ACCEPTED): _S.PARTIALLY_FILLED,
    (_S.PARTIALLY_FILLED, _E.PARTIAL_FILL): _S.PARTIALLY_FILLED,
    (_S.PARTIALLY_FILLED, _E.FILL): _S.FILLED,
    (_S.PARTIALLY_FILLED, _E.CANCEL_REQUESTED): _S.PENDING_CANCEL,
    (_S.PARTIALLY_FILLED, _E.CANCELED): _S.CANCELED,
    (_S.PARTIALLY_FILLED, _E.EXPIRED): _S.EXPIRED,
    (_S.PARTIALLY_FILLED, _E.TIMED_OUT): _S.UNKNOWN,
    (_S.PENDING_CANCEL, _E.ACCEPTED): _S.PENDING_CANCEL,
    (_S.PENDING_CANCEL, _E.PARTIAL_FILL): _S.PENDING_CANCEL,
    (_S.PENDING_CANCEL, _E.FILL): _S.FILLED,
    (_S.PENDING_CANCEL, _E.CANCELED): _S.CANCELED,
    (_S.PENDING_CANCEL, _E.REJECTED): _S.REJECTED,
    (_S.PENDING_CANCEL, _E.EXPIRED): _S.EXPIRED,
    (_S.PENDING_CANCEL, _E.TIMED_OUT): _S.UNKNOWN,
    # The venue's answer to a status query is the truth.
    (_S.UNKNOWN, _E.ACCEPTED): _S.NEW,
    (_S.UNKNOWN, _E.PARTIAL_FILL): _S.PARTIALLY_FILLED,
    (_S.UNKNOWN, _E.FILL): _S.FILLED,
    (_S.UNKNOWN, _E.CANCEL_REQUESTED): _S.PENDING_CANCEL,
    (_S.UNKNOWN, _E.CANCELED): _S.CANCELED,
    (_S.UNKNOWN, _E.REJECTED): _S.REJECTED,
    (_S.UNKNOWN, _E.EXPIRED): _S.EXPIRED,
    (_S.UNKNOWN, _E.TIMED_OUT): _S.UNKNOWN,
}

_EVENT_FOR_STATUS: dict[OrderStatus, OrderEvent] = {
    _S.PENDING_NEW: _E.SUBMIT,
    _S.NEW: _E.ACCEPTED,
    _S.PARTIALLY_FILLED: _E.PARTIAL_FILL,
    _S.FILLED: _E.FILL,
    _S.PENDING_CANCEL: _E.CANCEL_REQUESTED,
    _S.CANCELED: _E.CANCELED,
    _S.REJECTED: _E.REJECTED,
    _S.EXPIRED: _E.EXPIRED,
    _S.UNKNOWN: _E.TIMED_OUT,
}


# Module names for what the order path reads on every order: in Python 3.11 `OrderEvent.FILL` costs a metaclass lookup.
_SUBMIT, _FILL, _PARTIAL_FILL = OrderEvent.SUBMIT, OrderEvent.FILL, OrderEvent.PARTIAL_FILL
_NEW, _PARTIALLY_FILLED = OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED


class InvalidTransition(Exception):
    """An event the order's current state does not allow; the order is left unchanged."""

    def __init__(self, client_order_id: str, status: OrderStatus, event: OrderEvent, detail: str = "") -> None:
        self.client_order_id = client_order_id
        self.status = status
        self.event = event
        self.detail = detail
        msg = f"order {client_order_id}: event {event.value} not allowed from {status.value}"
        super().__init__(f"{msg}: {detail}" if detail else msg)


def event_for_status(status: OrderStatus) -> OrderEvent:
    """The event that moves an order to a venue-reported `status` (total: never raises for a valid status)."""
    return _EVENT_FOR_STATUS[OrderStatus(status)]


def allowed(status: OrderStatus, event: OrderEvent) -> bool:
    return (status, event) in TRANSITIONS


class OrderStateMachine:
    """Stateless: holds the rules, not the orders, so one instance can serve every order of a gateway."""

    def transition(self, order: Order, event: OrderEvent, reason: str = "") -> Order:
        """Return `order` moved by `event`, stamped with the time; raise `InvalidTransition` if not allowed."""
        target = self._target(order, event)
        if reason:
            return msgspec.structs.replace(order, status=target, updated_ts_ns=now_ns(), reason=reason)
        return msgspec.structs.replace(order, status=target, updated_ts_ns=now_ns())

    @staticmethod
    def _target(order: Order, event: OrderEvent) -> OrderStatus:
        """The status `event` moves `order` to; raise `InvalidTransition` if not allowed."""
        target = TRANSITIONS.get((order.status, event))
        if target is None:
            detail = "order is terminal" if order.status.is_terminal else ""
            raise InvalidTransition(order.client_order_id, order.status, event, detail)
        if event is _SUBMIT and (order.filled_qty != 0.0 or order.venue_order_id is not None):
            raise InvalidTransition(order.client_order_id, order.status, event,
                                    "only a fresh order can be submitted")
        if target is _NEW and order.filled_qty > 0.0:
            # An UNKNOWN order the venue reports as open, but we already hold fills for.
            target = _PARTIALLY_FILLED
        return target

    def apply_fill(self, order: Order, fill: Fill, venue_done: bool = False) -> Order:
        """Add `fill` to the order's filled quantity and average price, then move it to PARTIALLY_FILLED or FILLED.

        A fill that completes the order within `FILL_TOLERANCE` sets filled_qty to exactly the order
        quantity, so `remaining` is 0 and no dust is left working. A notional order is completed only by
        `venue_done` (the venue reported it filled with this fill); its quantity estimate may be exceeded.
        """
        if fill.client_order_id != order.client_order_id:
            raise InvalidTransition(order.client_order_id, order.status, OrderEvent.FILL,
                                    f"fill is for order {fill.client_order_id}")
        if not fill.qty > 0.0:
            raise InvalidTransition(order.client_order_id, order.status, OrderEvent.FILL,
                                    f"fill quantity {fill.qty!r} is not positive")
        filled = order.filled_qty + fill.qty
        avg = (order.avg_fill_price * order.filled_qty + fill.price * fill.qty) / filled
        # One replace with the transition's fields (status, time) and the fill's: what `transition` then a
        # second replace would give, for one copy of the order (this runs on every fill).
        if order.notional is not None:
            target = self._target(order, _FILL if venue_done else _PARTIAL_FILL)
            qty = filled if venue_done else max(order.qty, filled)
            return msgspec.structs.replace(order, status=target, updated_ts_ns=now_ns(), qty=qty, filled_qty=filled,
                                           avg_fill_price=avg)
        tol = FILL_TOLERANCE * abs(order.qty)
        remaining = order.qty - order.filled_qty
        if fill.qty > remaining + tol:
            raise InvalidTransition(order.client_order_id, order.status, OrderEvent.FILL,
                                    f"overfill: fill {fill.qty!r} > remaining {remaining!r}")
        complete = fill.qty >= remaining - tol
        target = self._target(order, _FILL if complete else _PARTIAL_FILL)
        return msgspec.structs.replace(order, status=target, updated_ts_ns=now_ns(),
                                       filled_qty=order.qty if complete else filled, avg_fill_price=avg)

    def complete_notional(self, order: Order) -> Order:
        """The venue says a notional order is filled and we hold all its fills: its quantity is what was filled."""
        if order.notional is None:
            raise InvalidTransition(order.client_order_id, order.status, OrderEvent.FILL,
                                    "only a notional order is completed by the venue's word")
        if not order.filled_qty > 0.0:
            raise InvalidTransition(order.client_order_id, order.status, OrderEvent.FILL,
                                    "a filled notional order needs its fills first")
        moved = self.transition(order, OrderEvent.FILL)
        return msgspec.structs.replace(moved, qty=order.filled_qty)
