"""The `risk` config section: limits per scope and the switches risk starts with."""

from __future__ import annotations

from cluster.config_base import Cfg, check


class RiskLimits(Cfg):
    """Limits for one scope; None means no limit at this scope."""

    max_order_qty: float | None = None
    max_order_notional: float | None = None
    max_position_qty: float | None = None
    max_position_notional: float | None = None


class RiskSection(Cfg):
    kill_switch: bool = False
    defaults: RiskLimits = RiskLimits(max_order_notional=50_000.0)
    symbols: dict[str, RiskLimits] = {}
    strategies: dict[str, RiskLimits] = {}
    venues: dict[str, RiskLimits] = {}
    # A reference price older than this cannot price an order: fail closed.
    max_mark_age_s: float = 5.0

    def validate(self, symbols: set[str], strategies: set[str], venues: set[str]) -> None:
        for scope, table, known in (("symbols", self.symbols, symbols), ("strategies", self.strategies, strategies),
                                    ("venues", self.venues, venues)):
            for k in table:
                check(k in known, f"risk.{scope}.{k}", f"no such {scope[:-1]} in this config")
        for scope, limits in [("defaults", self.defaults), *[(f"symbols.{k}", v) for k, v in self.symbols.items()],
                              *[(f"strategies.{k}", v) for k, v in self.strategies.items()],
                              *[(f"venues.{k}", v) for k, v in self.venues.items()]]:
            for field in RiskLimits.__struct_fields__:
                value = getattr(limits, field)
                check(value is None or value > 0, f"risk.{scope}.{field}", "must be > 0 (or omitted for no limit)")
        check(self.max_mark_age_s > 0, "risk.max_mark_age_s", "must be > 0")
