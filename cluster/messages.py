"""Every message that crosses an actor boundary, defined once.

msgspec Structs: typed, cheap to pickle through Ray's object store, and encodable
to JSON for the Redis journal with one call (`to_json` / `from_json`).
Prices and quantities are floats; venue rounding happens at the gateway edge.
"""

from __future__ import annotations

import enum
import time

import msgspec


def now_ns() -> int:
    return time.time_ns()


class Side(str, enum.Enum):
    BUY = "buy"
    SELL = "sell"

    @property
    def sign(self) -> int:
        return 1 if self is _BUY else -1

    @property
    def opposite(self) -> Side:
        return _SELL if self is _BUY else _BUY


# In Python 3.11 `Side.BUY` goes through the enum metaclass (~0.2 us); the order path reads these module names.
_BUY, _SELL = Side.BUY, Side.SELL


class OrderType(str, enum.Enum):
    LIMIT = "limit"
    MARKET = "market"


class TimeInForce(str, enum.Enum):
    GTC = "gtc"
    IOC = "ioc"


class Liquidity(str, enum.Enum):
    MAKER = "maker"
    TAKER = "taker"


class OrderStatus(str, enum.Enum):
    """Order life cycle; the allowed transitions live in gateways.order_state."""

    PENDING_NEW = "pending_new"
    NEW = "new"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    PENDING_CANCEL = "pending_cancel"
    CANCELED = "canceled"
    REJECTED = "rejected"
    EXPIRED = "expired"
    UNKNOWN = "unknown"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED, OrderStatus.EXPIRED})


class IntentAction(str, enum.Enum):
    NEW = "new"
    CANCEL = "cancel"


class RejectReason(str, enum.Enum):
    """Why the risk actor (or a gateway) refused an order. Stable codes for audit and metrics."""

    NONE = "none"
    KILL_SWITCH = "kill_switch"
    TRADING_HALTED = "trading_halted"
    REDUCE_ONLY = "reduce_only"
    MAX_ORDER_QTY = "max_order_qty"
    MAX_ORDER_NOTIONAL = "max_order_notional"
    POSITION_LIMIT = "position_limit"
    POSITION_NOTIONAL_LIMIT = "position_notional_limit"
    GROSS_EXPOSURE = "gross_exposure"
    NET_EXPOSURE = "net_exposure"
    PRICE_COLLAR = "price_collar"
    NO_REFERENCE_PRICE = "no_reference_price"
    ORDER_RATE = "order_rate"
    MAX_OPEN_ORDERS = "max_open_orders"
    DUPLICATE_ORDER = "duplicate_order"
    SELF_TRADE = "self_trade"
    UNKNOWN_SYMBOL = "unknown_symbol"
    UNKNOWN_VENUE = "unknown_venue"
    UNKNOWN_ORDER = "unknown_order"
    INVALID_ORDER = "invalid_order"
    RISK_UNAVAILABLE = "risk_unavailable"
    STATE_UNAVAILABLE = "state_unavailable"
    GATEWAY_UNAVAILABLE = "gateway_unavailable"
    VENUE_REJECTED = "venue_rejected"
    MIN_NOTIONAL = "min_notional"
    LOT_SIZE = "lot_size"
    CANCEL_RATE = "cancel_rate"
    OUTSIDE_TRADING_HOURS = "outside_trading_hours"
    TRADING_PAUSED = "trading_paused"


class Struct(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Base for immutable messages."""


Level = tuple[float, float]


class BookUpdate(Struct, tag="book"):
    """Top-N snapshot of one symbol's L2 book as the feed actor holds it.

    `skipped` counts updates conflated away since the receiver's previous one;
    a strategy must not treat a crossed or stale book as good.
    """

    venue: str
    symbol: str
    seq: int
    bids: list[Level]
    asks: list[Level]
    exchange_ts_ns: int = 0
    receive_ts_ns: int = 0
    publish_ts_ns: int = 0
    skipped: int = 0
    crossed: bool = False
    stale: bool = False

    @property
    def best_bid(self) -> float | None:
        return self.bids[0][0] if self.bids else None

    @property
    def best_ask(self) -> float | None:
        return self.asks[0][0] if self.asks else None

    @property
    def mid(self) -> float | None:
        if not self.bids or not self.asks:
            return None
        return (self.bids[0][0] + self.asks[0][0]) / 2.0

    @property
    def spread(self) -> float | None:
        if not self.bids or not self.asks:
            return None
        return self.asks[0][0] - self.bids[0][0]

    @property
    def tradeable(self) -> bool:
        return bool(self.bids) and bool(self.asks) and not self.crossed and not self.stale


class Trade(Struct, tag="trade"):
    venue: str
    symbol: str
    trade_id: str
    price: float
    qty: float
    aggressor: Side
    exchange_ts_ns: int = 0
    receive_ts_ns: int = 0


class MarkPrice(Struct, tag="mark"):
    """Reference price the risk actor uses for notional, collars and unrealized P&L."""

    venue: str
    symbol: str
    mid: float
    ts_ns: int


class OrderIntent(Struct, tag="intent"):
    """What a strategy wants. Only the risk actor turns an intent into an Order."""

    strategy: str
    venue: str
    symbol: str
    action: IntentAction = IntentAction.NEW
    side: Side = Side.BUY
    qty: float = 0.0
    order_type: OrderType = OrderType.LIMIT
    price: float | None = None
    tif: TimeInForce = TimeInForce.GTC
    target_client_order_id: str | None = None
    # A market order for an amount of quote currency (Alpaca `notional`); qty then stays 0 and
    # risk checks it as notional / reference price.
    notional: float | None = None
    tag: str = ""
    created_ts_ns: int = 0
    # When the market message that led to this intent reached its feed actor (tick-to-order latency).
    trigger_ts_ns: int = 0


class RiskDecision(Struct, tag="decision"):
    """The risk actor's answer, with the numbers that decided it (kept in the audit stream)."""

    approved: bool
    reason: RejectReason
    strategy: str
    venue: str
    symbol: str
    action: IntentAction = IntentAction.NEW
    client_order_id: str | None = None
    detail: str = ""
    values: dict[str, float] = {}
    ts_ns: int = 0


class Order(Struct, tag="order"):
    client_order_id: str
    strategy: str
    venue: str
    symbol: str
    side: Side
    qty: float
    order_type: OrderType
    price: float | None = None
    tif: TimeInForce = TimeInForce.GTC
    status: OrderStatus = OrderStatus.PENDING_NEW
    filled_qty: float = 0.0
    avg_fill_price: float = 0.0
    venue_order_id: str | None = None
    reason: str = ""
    created_ts_ns: int = 0
    updated_ts_ns: int = 0
    trigger_ts_ns: int = 0
    # Sent to the venue as an amount of quote currency instead of `qty` (Alpaca notional orders);
    # `qty` then holds risk's estimate (notional / reference price) until fills say the truth.
    notional: float | None = None

    @property
    def remaining(self) -> float:
        left = self.qty - self.filled_qty
        return 0.0 if left < 0.0 else left  # max(left, 0.0) without the call, NaN and -0.0 included


class Fill(Struct, tag="fill"):
    """One execution. `trade_id` is the venue's and de-duplicates fills."""

    client_order_id: str
    trade_id: str
    strategy: str
    venue: str
    symbol: str
    side: Side
    price: float
    qty: float
    fee: float = 0.0
    liquidity: Liquidity = Liquidity.TAKER
    ts_ns: int = 0


class ExecutionReport(Struct, tag="exec"):
    """A change of one order's state, with the fill that caused it if any."""

    client_order_id: str
    strategy: str
    venue: str
    symbol: str
    status: OrderStatus
    side: Side
    order_qty: float
    filled_qty: float = 0.0
    price: float | None = None
    fill: Fill | None = None
    reason: str = ""
    ts_ns: int = 0
    venue_order_id: str | None = None


class Position(Struct, frozen=False):
    """Net position of one strategy in one symbol (average-cost P&L)."""

    strategy: str
    venue: str
    symbol: str
    qty: float = 0.0
    avg_price: float = 0.0
    realized_pnl: float = 0.0
    fees: float = 0.0
    volume: float = 0.0
    fills: int = 0

    def unrealized(self, mark: float | None) -> float:
        if mark is None or self.qty == 0.0:
            return 0.0
        return (mark - self.avg_price) * self.qty


Message = BookUpdate | Trade | MarkPrice | OrderIntent | RiskDecision | Order | Fill | ExecutionReport

_encoder = msgspec.json.Encoder()
_decoders: dict[type, msgspec.json.Decoder] = {}


def to_json(msg: msgspec.Struct) -> bytes:
    return _encoder.encode(msg)


def from_json(data: bytes | str, typ: type[msgspec.Struct]) -> msgspec.Struct:
    dec = _decoders.get(typ)
    if dec is None:
        dec = _decoders[typ] = msgspec.json.Decoder(typ)
    return dec.decode(data)
