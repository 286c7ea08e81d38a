"""Binance and Alpaca venues on a simulated market: their gateways trade on the venue simulator, never on the
real venue with orders priced off simulated books."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from cluster.config import ConfigError, VenueSection, parse_config
from cluster.launch import ClusterRun
from gateways.secrets import simulator_credentials
from tests.waiting import wait_for


def venues_config(tmp_path: Path, redis_url: str, source: str = "simulator") -> dict[str, Any]:
    return {
        "cluster": {"name": "simvenues", "data_dir": str(tmp_path / "runs")},
        "redis": {"url": redis_url},
        "api": {"enabled": False},
        "venues": {"binance": {"type": "binance"}, "alpaca": {"type": "alpaca"}},
        "market": {"source": source},
        "symbols": [{"symbol": "BTCUSDT", "venue": "binance", "price": 60000.0, "tick_size": 0.1, "lot_size": 0.0001},
                    {"symbol": "BTC/USD", "venue": "alpaca", "price": 60000.0, "tick_size": 0.1, "lot_size": 0.0001}],
        "strategies": [{"name": "mm", "type": "market_maker", "symbols": ["BTCUSDT", "BTC/USD"],
                        "params": {"order_qty_notional": 500.0, "max_position_notional": 2000.0}}],
        "risk": {"defaults": {"max_order_notional": 5000.0, "max_position_notional": 20000.0,
                              "max_orders_per_min": 1200, "price_collar_bps": 500.0}},
    }


def test_a_venue_on_the_simulator_gets_its_urls_and_the_simulators_keys():
    binance = VenueSection(type="binance", rest_url="https://api.binance.com", secrets_file="keys.yaml")
    on = binance.on_simulator("http://127.0.0.1:4567")
    assert (on.rest_url, on.ws_url, on.stream_url, on.secrets_file) == ("http://127.0.0.1:4567", "ws://127.0.0.1:4567",
                                                                       "", "")
    alpaca = VenueSection(type="alpaca").on_simulator("http://127.0.0.1:4567")
    assert (alpaca.rest_url, alpaca.data_url, alpaca.stream_url) == ("http://127.0.0.1:4567", "ws://127.0.0.1:4567",
                                                                     "ws://127.0.0.1:4567/stream")
    assert simulator_credentials("binance").api_key and simulator_credentials("alpaca").api_secret


def test_with_real_market_data_orders_go_to_the_configured_venue_and_start_says_so(tmp_path):
    data = venues_config(tmp_path, "redis://127.0.0.1:1", source="venue")
    data["venues"]["paper"] = {"type": "paper"}
    where = ClusterRun(parse_config(data)).order_destinations()
    assert where == {"alpaca": "https://paper-api.alpaca.markets: a real alpaca endpoint, with your keys",
                     "binance": "https://api.binance.com: a real binance endpoint, with your keys",
                     "paper": "paper fills inside the gateway (no venue)"}


def test_on_the_simulator_start_says_so_and_that_a_secrets_file_is_not_read(tmp_path):
    from types import SimpleNamespace

    data = venues_config(tmp_path, "redis://127.0.0.1:1")
    data["venues"]["alpaca"]["secrets_file"] = "~/.config/rsc/alpaca.yaml"
    run = ClusterRun(parse_config(data))
    run.market_sim = SimpleNamespace(http_url="http://127.0.0.1:4567")
    assert run.order_destinations() == {
        "alpaca": "the venue simulator at http://127.0.0.1:4567 (alpaca protocol, the simulator's keys; "
                  "secrets_file ~/.config/rsc/alpaca.yaml is not read)",
        "binance": "the venue simulator at http://127.0.0.1:4567 (binance protocol, the simulator's keys)"}


def test_the_builtin_market_refuses_a_real_venue(tmp_path):
    with pytest.raises(ConfigError, match=r"venues\.binance\.type: a binance venue needs market\.source simulator"):
        parse_config(venues_config(tmp_path, "", source="builtin"))


@pytest.mark.integration
@pytest.mark.ray
def test_binance_and_alpaca_gateways_trade_on_the_simulator(ray_session, redis_url, tmp_path, monkeypatch):
    """No keys in the environment and no route to the internet: a fill on either venue can only come from the
    simulator, signed with its keys."""
    for name in ("BINANCE_API_KEY", "BINANCE_API_SECRET", "APCA_API_KEY_ID", "APCA_API_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    run = ClusterRun(parse_config(venues_config(tmp_path, redis_url)))
    run.start()
    try:
        where = run.order_destinations()
        assert set(where) == {"binance", "alpaca"} and all(w.startswith("the venue simulator at http://127.0.0.1:")
                                                           for w in where.values()), where
        store = run.store
        assert store is not None

        def fills() -> Counter:
            return Counter(f.venue for f in store.journal_fills())

        wait_for(lambda: fills()["binance"] > 0 and fills()["alpaca"] > 0, 90, "fills on both venues")
    finally:
        summary = run.shutdown()
    assert summary["fills"] > 0 and set(summary["symbols"]) == {"BTCUSDT", "BTC/USD"}
