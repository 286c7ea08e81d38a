"""exchangeInfo filters on the recorded Binance response: rounding and the filter named in a refusal."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from gateways.binance.filters import ExchangeFilters, FilterRejected
from tests.conftest import SHARED_DATA


@pytest.fixture(scope="module")
def btc():
    return ExchangeFilters(json.loads((SHARED_DATA / "binance" / "rest_spot_exchange_info.json").read_text())).get("BTCUSDT")


def test_price_rounds_to_tick_away_from_aggression_and_qty_down_to_step(btc) -> None:
    q, p = btc.prepare("BUY", "LIMIT", 0.123456789, 60000.129, 60000.0)
    assert (q, p) == (Decimal("0.12345"), Decimal("60000.12"))
    _, p_sell = btc.prepare("SELL", "LIMIT", 0.1, 60000.121, 60000.0)
    assert p_sell == Decimal("60000.13")


@pytest.mark.parametrize(("side", "otype", "qty", "price", "ref", "name"), [
    ("BUY", "LIMIT", 0.0001, 50000.0, 50000.0, "MIN_NOTIONAL"),  # 5 USDT < 10
    ("BUY", "LIMIT", 0.000001, 50000.0, 50000.0, "LOT_SIZE"),  # rounds below minQty
    ("BUY", "LIMIT", 10000.0, 50000.0, 50000.0, "LOT_SIZE"),  # above maxQty
    ("BUY", "LIMIT", 0.01, 9000.0, 50000.0, "PERCENT_PRICE"),  # below 0.2 x average
    ("SELL", "LIMIT", 0.01, 260000.0, 50000.0, "PERCENT_PRICE"),  # above 5 x average
    ("BUY", "LIMIT", 0.01, 2_000_000.0, None, "PRICE_FILTER"),  # above maxPrice
    ("BUY", "MARKET", 0.0001, None, 50000.0, "MIN_NOTIONAL"),  # applyToMarket uses the average price
])
def test_refusals_name_the_filter(btc, side, otype, qty, price, ref, name) -> None:
    with pytest.raises(FilterRejected) as exc:
        btc.prepare(side, otype, qty, price, ref)
    assert exc.value.filter_type == name
    assert f"Filter failure: {name}" in str(exc.value)


def test_unknown_symbol_is_refused() -> None:
    f = ExchangeFilters({"symbols": []})
    with pytest.raises(FilterRejected):
        f.get("DOGEUSDT")
