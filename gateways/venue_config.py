"""The `venues.<name>` config section: one venue the cluster trades on.

URLs default to the real venues' documented endpoints; point them at the local
venue simulator (or Binance's testnet / Alpaca's paper endpoint) by config alone.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from cluster.config_base import Cfg, check

DEFAULT_URLS: dict[str, dict[str, str]] = {
    "binance": {"rest_url": "https://api.binance.com", "ws_url": "wss://stream.binance.com:9443"},
    "alpaca": {"rest_url": "https://paper-api.alpaca.markets", "data_url": "wss://stream.data.alpaca.markets",
               "stream_url": "wss://paper-api.alpaca.markets/stream"},
}


class VenueSection(Cfg):
    type: Literal["paper", "binance", "alpaca"] = "paper"
    latency_ms: float = 2.0
    maker_fee_bps: float = 1.0
    taker_fee_bps: float = 5.0
    order_timeout_s: float = 5.0
    # Empty = the venue's documented default (DEFAULT_URLS).
    rest_url: str = ""
    ws_url: str = ""
    data_url: str = ""
    stream_url: str = ""
    # API keys come from the environment or from this file, never from the config itself.
    secrets_file: str = ""
    recv_window_ms: int = 5000

    def url(self, name: str) -> str:
        """The configured URL, else the venue's documented default."""
        return getattr(self, name) or DEFAULT_URLS.get(self.type, {}).get(name, "")

    def on_simulator(self, simulator_url: str) -> VenueSection:
        """This venue as the venue simulator serves it at `simulator_url` (http://host:port): market data and
        order entry in the venue's own protocol. Where a Binance or Alpaca venue trades when the market is
        simulated or replayed, so that no order priced off a simulated book can reach the real venue."""
        ws = "ws" + simulator_url[len("http"):]
        return msgspec.structs.replace(self, rest_url=simulator_url, ws_url=ws, data_url=ws,
                                       stream_url=f"{ws}/stream" if self.type == "alpaca" else "", secrets_file="")

    def validate(self, key: str) -> None:
        check(self.latency_ms >= 0, f"{key}.latency_ms", "must be >= 0")
        check(self.order_timeout_s > 0, f"{key}.order_timeout_s", "must be > 0")
        check(0 < self.recv_window_ms <= 60_000, f"{key}.recv_window_ms", "must be between 1 and 60000 (Binance's maximum)")
        for name in ("rest_url", "ws_url", "data_url", "stream_url"):
            value = getattr(self, name)
            scheme = ("http://", "https://") if name == "rest_url" else ("ws://", "wss://")
            check(not value or value.startswith(scheme), f"{key}.{name}", f"{value!r} must start with {' or '.join(scheme)}")
