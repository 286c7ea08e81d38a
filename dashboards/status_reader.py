"""Read-only views of a running cluster, from Redis only: what the API, `status` and reports show.

Nothing here talks to an actor, so reading can never slow the trading path
beyond Redis reads. Fills are read from the journal stream incrementally
(only entries after the last one seen), and the analytics are recomputed at
most every `ttl_s` seconds.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from cluster.messages import Fill, Order, from_json
from cluster.state_store import StateStore
from dashboards.analytics import Performance, analyze

READ_CHUNK = 10_000


class FillJournal:
    """Every fill in the journal stream, read incrementally."""

    def __init__(self, store: StateStore):
        self.store = store
        self.fills: list[Fill] = []
        self.last_id: bytes | None = None
        self._lock = threading.Lock()

    def refresh(self) -> list[Fill]:
        with self._lock:
            key = self.store.key("journal")
            while True:
                start = b"-" if self.last_id is None else b"(" + self.last_id
                entries = self.store.r.xrange(key, min=start, max="+", count=READ_CHUNK)
                for _, fields in entries:
                    if fields.get(b"kind") == b"fill":
                        self.fills.append(from_json(fields[b"data"], Fill))  # type: ignore[arg-type]
                if entries:
                    self.last_id = entries[-1][0]
                if len(entries) < READ_CHUNK:
                    return self.fills


class StatusReader:
    def __init__(self, store: StateStore, ttl_s: float = 2.0, live: bool = True):
        self.store = store
        self.journal = FillJournal(store)
        self.ttl_s = ttl_s
        self.live = live  # a running cluster: equity runs to now; a stopped run's ends at its last fill
        self._perf: dict[float | None, tuple[float, Performance]] = {}

    @property
    def cluster(self) -> str:
        return self.store.cluster

    def health(self) -> dict[str, Any]:
        try:
            ok = self.store.ping()
        except Exception as exc:
            return {"status": "unavailable", "cluster": self.cluster, "redis": False, "error": str(exc)}
        return {"status": "ok" if ok else "unavailable", "cluster": self.cluster, "redis": bool(ok),
                "time_ns": time.time_ns()}

    def status(self) -> dict[str, Any]:
        stats = self.store.stats()
        actors = {k: json.loads(v) for k, v in self.store.actors().items()}
        orders = self.store.open_orders()
        by_state: dict[str, int] = {}
        for o in orders:
            by_state[o.status.value] = by_state.get(o.status.value, 0) + 1
        return {
            "cluster": self.cluster,
            "actors": actors,
            "kill_switches": sorted(self.store.kill_switches()),
            "open_orders": len(orders),
            "open_orders_by_state": by_state,
            "orders_submitted": stats.get("orders_submitted", 0),
            "orders_rejected": {k.split(":", 1)[1]: v for k, v in stats.items() if k.startswith("rejected:")},
            "fills": stats.get("fills", 0),
            "fills_by_symbol": {k.split(":", 1)[1]: v for k, v in stats.items() if k.startswith("fills:")},
            "book_updates": {k.split(":", 1)[1]: v for k, v in stats.items() if k.startswith("book_updates:")},
        }

    def positions(self, strategy: str | None = None, symbol: str | None = None) -> list[dict[str, Any]]:
        marks = self.store.marks()
        out = []
        for p in sorted(self.store.positions(), key=lambda p: (p.strategy, p.symbol)):
            if (strategy and p.strategy != strategy) or (symbol and p.symbol != symbol):
                continue
            mark = marks.get(p.symbol)
            unreal = p.unrealized(mark)
            out.append({"strategy": p.strategy, "venue": p.venue, "symbol": p.symbol, "qty": p.qty,
                        "avg_price": p.avg_price, "mark": mark, "notional": p.qty * (mark or p.avg_price),
                        "realized_pnl": p.realized_pnl, "fees": p.fees, "unrealized_pnl": unreal,
                        "net_pnl": p.realized_pnl - p.fees + unreal, "volume": p.volume, "fills": p.fills})
        return out

    def account(self) -> dict[str, Any]:
        pos = self.positions()
        realized = sum(p["realized_pnl"] for p in pos)
        fees = sum(p["fees"] for p in pos)
        unreal = sum(p["unrealized_pnl"] for p in pos)
        net_by_symbol: dict[str, float] = {}
        for p in pos:
            net_by_symbol[p["symbol"]] = net_by_symbol.get(p["symbol"], 0.0) + p["notional"]
        return {"cluster": self.cluster, "realized_pnl": realized, "fees": fees, "unrealized_pnl": unreal,
                "net_pnl": realized - fees + unreal, "gross_exposure": sum(abs(v) for v in net_by_symbol.values()),
                "net_exposure": sum(net_by_symbol.values()), "turnover": sum(p["volume"] for p in pos),
                "positions": sum(1 for p in pos if p["qty"] != 0.0), "open_orders": len(self.store.open_orders())}

    def trades(self, limit: int = 100, strategy: str | None = None, symbol: str | None = None) -> list[dict[str, Any]]:
        """The newest fills first, read backwards from the end of the journal."""
        out: list[dict[str, Any]] = []
        key = self.store.key("journal")
        end = b"+"
        while len(out) < limit:
            entries = self.store.r.xrevrange(key, max=end, min="-", count=max(limit * 3, 100))
            for eid, fields in entries:
                if fields.get(b"kind") != b"fill":
                    continue
                f: Fill = from_json(fields[b"data"], Fill)  # type: ignore[assignment]
                if (strategy and f.strategy != strategy) or (symbol and f.symbol != symbol):
                    continue
                out.append({"id": eid.decode(), "trade_id": f.trade_id, "client_order_id": f.client_order_id,
                            "strategy": f.strategy, "venue": f.venue, "symbol": f.symbol, "side": f.side.value,
                            "price": f.price, "qty": f.qty, "fee": f.fee, "liquidity": f.liquidity.value,
                            "ts_ns": f.ts_ns})
                if len(out) >= limit:
                    break
            if len(entries) == 0 or len(out) >= limit:
                break
            end = b"(" + entries[-1][0]
        return out

    def open_orders(self) -> list[Order]:
        return self.store.open_orders()

    def performance(self, bar_s: float | None = None) -> Performance:
        cached = self._perf.get(bar_s)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self.ttl_s:
            return cached[1]
        fills = self.journal.refresh()
        perf = analyze(fills, self.store.marks(), as_of_ns=time.time_ns() if self.live else None, bar_s=bar_s)
        self._perf[bar_s] = (now, perf)
        return perf

    def prometheus_text(self) -> str:
        """Performance gauges in the Prometheus text format (scraped from the API's /metrics/prometheus)."""
        return performance_to_prometheus(self.performance(), self.status())


def format_performance(perf: Performance) -> str:
    """The performance table `python -m cluster status` prints (total, per strategy, per symbol)."""

    def num(v: float | None, width: int, digits: int = 4) -> str:
        return f"{'n/a':>{width}}" if v is None else f"{v:>{width}.{digits}f}"

    rows = [("total", perf.total)] + [(f"strategy {k}", v) for k, v in perf.by_strategy.items()] + \
           [(f"symbol {k}", v) for k, v in perf.by_symbol.items()]
    names = [name for name, _ in rows]
    first = max(22, *(len(n) for n in names))
    # A space between columns, so that a value wider than its column (a Sharpe of -11570.44) cannot run into the next.
    header = ["fills".rjust(6), "net P&L".rjust(11), "fees".rjust(9), "Sharpe".rjust(8), "Sortino".rjust(8),
              "vol/yr".rjust(11), "max DD".rjust(9), "DD s".rjust(7), "win %".rjust(6)]
    lines = [f"performance (returns over {perf.total.bar_s:g}s bars, annualized, 365-day year):",
             f"  {'':<{first}} " + " ".join(header)]
    for name, s in rows:
        win = None if s.win_rate is None else 100 * s.win_rate
        cells = [f"{s.fills:>6}", num(s.net_pnl, 11), num(s.fees, 9), num(s.sharpe, 8, 2), num(s.sortino, 8, 2),
                 num(s.volatility, 11, 2), num(s.max_drawdown, 9), f"{s.max_drawdown_duration_s:>7.0f}", num(win, 6, 1)]
        lines.append(f"  {name:<{first}} " + " ".join(cells))
    return "\n".join(lines)


PERF_GAUGES = {
    "net_pnl": "Net P&L: realized - fees + unrealized",
    "realized_pnl": "Realized P&L, gross of fees",
    "unrealized_pnl": "Unrealized P&L at the marks",
    "fees": "Fees paid",
    "turnover": "Traded notional",
    "fills": "Fills",
    "sharpe": "Annualized Sharpe of per-bar P&L changes (365-day year, rf 0)",
    "sortino": "Annualized Sortino of per-bar P&L changes",
    "volatility": "Annualized volatility of P&L changes (currency)",
    "max_drawdown": "Max drawdown of the equity curve (currency)",
    "max_drawdown_duration_seconds": "Longest peak-to-recovery time",
    "win_rate": "Closing fills with positive realized P&L / closing fills",
}


def _label(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def performance_to_prometheus(perf: Performance, status: dict[str, Any] | None = None) -> str:
    lines: list[str] = []
    groups = [("total", "all", perf.total)] + [("strategy", k, v) for k, v in perf.by_strategy.items()] + \
             [("symbol", k, v) for k, v in perf.by_symbol.items()]
    for name, help_text in PERF_GAUGES.items():
        field = "max_drawdown_duration_s" if name == "max_drawdown_duration_seconds" else name
        metric = f"rsc_perf_{name}"
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} gauge"]
        for group, key, stats in groups:
            value = getattr(stats, field)
            if value is None:
                continue
            lines.append(f'{metric}{{group="{group}",name="{_label(key)}"}} {float(value)!r}')
    if status is not None:
        lines += ["# HELP rsc_api_open_orders Orders not yet terminal, by state", "# TYPE rsc_api_open_orders gauge"]
        for state, n in sorted(status["open_orders_by_state"].items()):
            lines.append(f'rsc_api_open_orders{{state="{_label(state)}"}} {n}')
        lines += ["# HELP rsc_api_kill_switches Kill switches on", "# TYPE rsc_api_kill_switches gauge",
                  f"rsc_api_kill_switches {len(status['kill_switches'])}"]
    lines += ["# HELP rsc_api_up 1 while the status API can read Redis", "# TYPE rsc_api_up gauge", "rsc_api_up 1"]
    return "\n".join(lines) + "\n"
