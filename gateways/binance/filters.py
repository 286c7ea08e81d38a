"""Binance `exchangeInfo` symbol filters, applied before an order is sent.

Price is rounded to `tickSize` (down for buys, up for sells: never more
aggressive than asked), quantity down to `stepSize`; then the order is checked
against PRICE_FILTER, LOT_SIZE / MARKET_LOT_SIZE, MIN_NOTIONAL / NOTIONAL and
PERCENT_PRICE / PERCENT_PRICE_BY_SIDE. An order the venue would refuse is
refused here with the filter's name, as the venue's -1013 error would name it.
Decimal arithmetic, so 0.1 + 0.2 never leaks into a price on the wire.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any


class FilterRejected(ValueError):
    def __init__(self, filter_type: str, detail: str) -> None:
        self.filter_type = filter_type
        super().__init__(f"Filter failure: {filter_type} ({detail})")


def _d(x: Any) -> Decimal:
    return Decimal(str(x))


def fmt_decimal(d: Decimal) -> str:
    """Plain notation without exponent or trailing zeros ('0.001', '60000')."""
    s = format(d.normalize(), "f")
    return s


def round_to_step(value: Decimal, step: Decimal, rounding: str) -> Decimal:
    if step <= 0:
        return value
    return (value / step).to_integral_value(rounding=rounding) * step


@dataclass
class SymbolFilters:
    symbol: str
    base_asset: str = ""
    quote_asset: str = ""
    status: str = "TRADING"
    filters: dict[str, dict[str, Any]] = field(default_factory=dict)
    quote_precision: int = 8
    quote_order_qty_market_allowed: bool = True

    @classmethod
    def from_exchange_info(cls, entry: dict[str, Any]) -> SymbolFilters:
        return cls(symbol=entry["symbol"], base_asset=entry.get("baseAsset", ""), quote_asset=entry.get("quoteAsset", ""),
                   status=entry.get("status", "TRADING"), filters={f["filterType"]: f for f in entry.get("filters", [])},
                   quote_precision=int(entry.get("quoteAssetPrecision", entry.get("quotePrecision", 8))),
                   quote_order_qty_market_allowed=bool(entry.get("quoteOrderQtyMarketAllowed", True)))

    @property
    def tick_size(self) -> Decimal:
        return _d(self.filters.get("PRICE_FILTER", {}).get("tickSize", "0"))

    @property
    def step_size(self) -> Decimal:
        return _d(self.filters.get("LOT_SIZE", {}).get("stepSize", "0"))

    def prepare(self, side: str, order_type: str, qty: float, price: float | None,
                avg_price: float | None) -> tuple[Decimal, Decimal | None]:
        """Round (qty, price) to the venue's grid and check every filter; raise FilterRejected naming the filter.

        `side` is BUY/SELL, `order_type` LIMIT/MARKET; `avg_price` is the reference for PERCENT_PRICE and
        for a market order's notional (None skips those checks).
        """
        if self.status != "TRADING":
            raise FilterRejected("SYMBOL_STATUS", f"{self.symbol} is {self.status}")
        limit = order_type == "LIMIT"
        q = _d(qty)
        lot = self.filters.get("MARKET_LOT_SIZE") if not limit else None
        if not lot or _d(lot.get("stepSize", "0")) <= 0:
            lot = self.filters.get("LOT_SIZE")
        if lot:
            q = round_to_step(q, _d(lot["stepSize"]), ROUND_FLOOR)
            if q < _d(lot["minQty"]):
                raise FilterRejected("LOT_SIZE", f"quantity {fmt_decimal(q)} < minQty {lot['minQty']}")
            if q > _d(lot["maxQty"]):
                raise FilterRejected("LOT_SIZE", f"quantity {fmt_decimal(q)} > maxQty {lot['maxQty']}")
        if q <= 0:
            raise FilterRejected("LOT_SIZE", "quantity rounds to zero")
        p: Decimal | None = None
        if limit:
            if price is None:
                raise FilterRejected("PRICE_FILTER", "limit order without a price")
            p = _d(price)
            pf = self.filters.get("PRICE_FILTER")
            if pf:
                p = round_to_step(p, _d(pf["tickSize"]), ROUND_FLOOR if side == "BUY" else ROUND_CEILING)
                if _d(pf["minPrice"]) > 0 and p < _d(pf["minPrice"]):
                    raise FilterRejected("PRICE_FILTER", f"price {fmt_decimal(p)} < minPrice {pf['minPrice']}")
                if _d(pf["maxPrice"]) > 0 and p > _d(pf["maxPrice"]):
                    raise FilterRejected("PRICE_FILTER", f"price {fmt_decimal(p)} > maxPrice {pf['maxPrice']}")
            if p <= 0:
                raise FilterRejected("PRICE_FILTER", "price rounds to zero")
        ref = _d(avg_price) if avg_price else None
        notional_price = p if p is not None else ref
        for name in ("MIN_NOTIONAL", "NOTIONAL"):
            f = self.filters.get(name)
            if not f or notional_price is None:
                continue
            if not limit and not f.get("applyToMarket", f.get("applyMinToMarket", True)):
                continue
            notional = notional_price * q
            if notional < _d(f["minNotional"]):
                raise FilterRejected(name, f"notional {fmt_decimal(notional)} < minNotional {f['minNotional']}")
            if name == "NOTIONAL" and "maxNotional" in f and notional > _d(f["maxNotional"]) and \
                    (limit or f.get("applyMaxToMarket", True)):
                raise FilterRejected(name, f"notional {fmt_decimal(notional)} > maxNotional {f['maxNotional']}")
        if p is not None and ref is not None:
            pp = self.filters.get("PERCENT_PRICE")
            if pp and not (ref * _d(pp["multiplierDown"]) <= p <= ref * _d(pp["multiplierUp"])):
                raise FilterRejected("PERCENT_PRICE", f"price {fmt_decimal(p)} outside "
                                     f"[{pp['multiplierDown']}, {pp['multiplierUp']}] x avg price {fmt_decimal(ref)}")
            ps = self.filters.get("PERCENT_PRICE_BY_SIDE")
            if ps:
                up, down = (("bidMultiplierUp", "bidMultiplierDown") if side == "BUY"
                            else ("askMultiplierUp", "askMultiplierDown"))
                if not (ref * _d(ps[down]) <= p <= ref * _d(ps[up])):
                    raise FilterRejected("PERCENT_PRICE_BY_SIDE", f"price {fmt_decimal(p)} outside the band for {side}")
        return q, p


    def prepare_quote(self, quote_qty: float) -> Decimal:
        """A MARKET order's `quoteOrderQty`: rounded down to the quote asset's precision, checked against
        MIN_NOTIONAL / NOTIONAL (the venue picks the quantity, within LOT_SIZE, to match it)."""
        if self.status != "TRADING":
            raise FilterRejected("SYMBOL_STATUS", f"{self.symbol} is {self.status}")
        if not self.quote_order_qty_market_allowed:
            raise FilterRejected("QUOTE_ORDER_QTY", f"{self.symbol} does not take quoteOrderQty market orders")
        q = round_to_step(_d(quote_qty), Decimal(1).scaleb(-self.quote_precision), ROUND_FLOOR)
        if q <= 0:
            raise FilterRejected("NOTIONAL", "quoteOrderQty rounds to zero")
        for name in ("MIN_NOTIONAL", "NOTIONAL"):
            f = self.filters.get(name)
            if not f or not f.get("applyToMarket", f.get("applyMinToMarket", True)):
                continue
            if q < _d(f["minNotional"]):
                raise FilterRejected(name, f"quoteOrderQty {fmt_decimal(q)} < minNotional {f['minNotional']}")
            if name == "NOTIONAL" and "maxNotional" in f and q > _d(f["maxNotional"]) and f.get("applyMaxToMarket", True):
                raise FilterRejected(name, f"quoteOrderQty {fmt_decimal(q)} > maxNotional {f['maxNotional']}")
        return q


class ExchangeFilters:
    """Every symbol's filters from one `GET /api/v3/exchangeInfo` body."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.symbols = {s["symbol"]: SymbolFilters.from_exchange_info(s) for s in info.get("symbols", [])}
        self.rate_limits: list[dict[str, Any]] = list(info.get("rateLimits", []))

    def get(self, symbol: str) -> SymbolFilters:
        f = self.symbols.get(symbol)
        if f is None:
            raise FilterRejected("SYMBOL", f"{symbol} is not listed in exchangeInfo")
        return f
