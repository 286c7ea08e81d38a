"""How many orders a minute risk lets through to a venue, against what the venue itself accepts.

Alpaca takes 200 API requests a minute per account: new orders, cancels and queries alike. A risk
config that lets more orders through does not fail loudly: past 200 the venue answers 429, the gateway
backs off and orders wait there, so a fast strategy stalls with no risk refusal to say why. The bound
is worked out from the same resolved limits the risk engine checks (`Resolved`), and said at start, so
that the user can make the binding limit risk's own (a refusal with a reason) instead of the venue's.
Binance's order limits come from `exchangeInfo` at start and are far above the default risk rates.
"""

from __future__ import annotations

import math

from cluster.config import ClusterConfig
from gateways.alpaca.trading import REQUESTS_PER_MIN as ALPACA_REQUESTS_PER_MIN
from risk.engine import Resolved

# Requests a minute the venue accepts per account (the limits its gateway keeps to; venues not listed: unchecked).
VENUE_REQUESTS_PER_MIN: dict[str, int] = {"alpaca": ALPACA_REQUESTS_PER_MIN}


def _per_min(per_s: float | None, per_min: float | None) -> float:
    """The tighter of a per-second (times 60) and a per-minute limit; inf where neither is set."""
    return min(math.inf if per_s is None else per_s * 60.0, math.inf if per_min is None else per_min)


def orders_per_min_to_venue(cfg: ClusterConfig, venue: str) -> float:
    """The most new orders a minute risk approves for `venue` (inf: unbounded).

    The venue's own rate limit bounds the total; otherwise each strategy trading there is bounded by its
    own (strategy scope, else `defaults`), and the venue gets their sum.
    """
    venue_bound = math.inf
    strategies_bound = 0.0
    for st in cfg.strategies:
        symbols = [s for s in st.symbols if cfg.symbol_map[s].venue == venue]
        if not symbols:
            continue
        r = Resolved(cfg.risk, st.name, venue, symbols[0], cfg.symbol_map[symbols[0]])
        venue_bound = _per_min(r.v_orders_s, r.v_orders_m)
        strategies_bound += _per_min(r.st_orders_s, r.st_orders_m)
    return min(venue_bound, strategies_bound)


def venue_rate_warnings(cfg: ClusterConfig) -> list[str]:
    """One line per venue whose risk limits let through more orders a minute than the venue accepts."""
    out = []
    for name, v in sorted(cfg.venues.items()):
        accepted = VENUE_REQUESTS_PER_MIN.get(v.type)
        if accepted is None:
            continue
        bound = orders_per_min_to_venue(cfg, name)
        if bound <= accepted:
            continue
        allowed = "no limit" if math.isinf(bound) else f"up to {bound:g} orders a minute"
        out.append(f"venue {name!r}: risk allows {allowed}, but {v.type} accepts {accepted} requests a minute "
                   f"per account (cancels and queries count too); past it the venue answers 429 and orders wait "
                   f"in the gateway. Set risk.venues.{name}.max_orders_per_min below {accepted} so that risk "
                   f"refuses them instead, with a reason.")
    return out
