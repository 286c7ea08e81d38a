"""The `venues.<name>` config section: one venue the cluster trades on."""

from __future__ import annotations

from typing import Literal

from cluster.config_base import Cfg, check


class VenueSection(Cfg):
    type: Literal["paper", "binance", "alpaca"] = "paper"
    latency_ms: float = 2.0
    maker_fee_bps: float = 1.0
    taker_fee_bps: float = 5.0
    order_timeout_s: float = 5.0

    def validate(self, key: str) -> None:
        check(self.latency_ms >= 0, f"{key}.latency_ms", "must be >= 0")
        check(self.order_timeout_s > 0, f"{key}.order_timeout_s", "must be > 0")
