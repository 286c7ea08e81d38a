"""Reconciliation: what Redis says against what the venue says, at start and after every reconnect.

Three checks, each repaired and reported:

* open orders: every order Redis holds open is queried by client order id and
  brought to the venue's state, with the fills the venue lists (missed ones are
  recorded, known ones are dropped by trade id); an order open at the venue that
  carries this cluster's id prefix but that Redis does not hold open is canceled
  (nothing may trade unmanaged); foreign orders are reported and left alone.
* fills since the last journaled fill of this venue, for the orders we hold.
* balances: the venue's balances are stored in Redis (`balances:<venue>`), and
  the change since the previous snapshot is compared with the net of the fills
  journaled in between.

The report goes to the log, to Redis (`reconcile:<venue>`) and to the journal
(`kind=reconcile`). It never contains credentials.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec

from cluster.messages import Fill, Order, OrderStatus, Side, from_json
from gateways.venue_adapter import NotSent, OrderNotFound, VenueError, reports_from_truth

log = logging.getLogger(__name__)

BALANCE_TOLERANCE = 1e-6


class ReconcileReport(msgspec.Struct, kw_only=True):
    venue: str
    why: str
    ts_ns: int
    orders_checked: int = 0
    orders_changed: list[str] = []
    fills_recovered: list[str] = []
    orphans_canceled: list[str] = []
    foreign_open_orders: list[str] = []
    unresolved: list[str] = []
    balances: dict[str, float] = {}
    balance_differences: dict[str, float] = {}

    @property
    def clean(self) -> bool:
        return not (self.orders_changed or self.fills_recovered or self.orphans_canceled or self.unresolved
                    or self.balance_differences)


def split_symbol(symbol: str, quotes: tuple[str, ...] = ("USDT", "USDC", "FDUSD", "BUSD", "BTC", "ETH", "USD")
                 ) -> tuple[str, str]:
    if "/" in symbol:
        a, b = symbol.split("/", 1)
        return a, b
    for q in quotes:
        if symbol.endswith(q) and len(symbol) > len(q):
            return symbol[: -len(q)], q
    return symbol, ""


def expected_balance_change(fills: list[Fill]) -> dict[str, float]:
    """Net asset change the fills imply (fees in the quote asset)."""
    out: dict[str, float] = {}
    for f in fills:
        base, quote = split_symbol(f.symbol)
        sign = 1.0 if f.side is Side.BUY else -1.0
        out[base] = out.get(base, 0.0) + sign * f.qty
        if quote:
            out[quote] = out.get(quote, 0.0) - sign * f.qty * f.price - f.fee
    return out


class Reconciler:
    def __init__(self, service: Any) -> None:
        self.s = service
        self.adapter = service.adapter
        self.store = service.store
        self.venue = service.venue_name

    async def run(self, why: str) -> ReconcileReport:
        rep = ReconcileReport(venue=self.venue, why=why, ts_ns=time.time_ns())
        seen_before = set(self.s.seen_trades)
        await self._orders(rep)
        await self._fills(rep)
        rep.fills_recovered = sorted(k.split(":", 1)[1] for k in self.s.seen_trades - seen_before)
        await self._balances(rep)
        self._record(rep)
        level = logging.INFO if rep.clean else logging.WARNING
        log.log(level, "gateway:%s: reconciliation (%s): %s", self.venue, why, msgspec.json.encode(rep).decode())
        return rep

    async def _orders(self, rep: ReconcileReport) -> None:
        for coid, order in list(self.s.orders.items()):
            rep.orders_checked += 1
            before = order.status, order.filled_qty
            try:
                truth = await self.adapter.query(order)
            except OrderNotFound:
                applied = await self.s.resolve(coid)
                if applied:
                    rep.orders_changed.append(coid)
                continue
            except (VenueError, NotSent):
                rep.unresolved.append(coid)
                continue
            self.s._apply_emit(reports_from_truth(order, truth), resolving=True)
            after = self.s.orders.get(coid)
            if after is None or (after.status, after.filled_qty) != before:
                rep.orders_changed.append(coid)
            if after is not None and after.status is OrderStatus.PENDING_CANCEL and truth.status in (
                    OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED):
                self.s._spawn(self.s.cancel_at_venue(coid))
        prefix = f"{self.store.cluster[:16]}-"
        for vo in await self.adapter.open_orders():
            if vo.client_order_id in self.s.orders:
                continue
            if vo.client_order_id.startswith(prefix):
                order = self.store.load_order(vo.client_order_id) or Order(
                    client_order_id=vo.client_order_id, strategy="unknown", venue=self.venue, symbol=vo.symbol,
                    side=Side.BUY if vo.side.upper() == "BUY" else Side.SELL, qty=vo.qty,
                    order_type=_limit(), price=vo.price)
                try:
                    await self.adapter.cancel(order)
                    rep.orphans_canceled.append(vo.client_order_id)
                except (VenueError, NotSent) as exc:
                    log.error("gateway:%s: cannot cancel orphan %s: %s", self.venue, vo.client_order_id, exc)
                    rep.unresolved.append(vo.client_order_id)
            else:
                rep.foreign_open_orders.append(vo.client_order_id)

    async def _fills(self, rep: ReconcileReport) -> None:
        orders = [o for o in self.s.orders.values() if o.venue_order_id]
        if not orders:
            return
        since = self._last_fill_ts() or min(o.created_ts_ns for o in orders)
        fills = await self.adapter.fills_since(orders, max(since - 1_000_000_000, 0))
        from gateways.venue_adapter import report

        reports = []
        for f in sorted(fills, key=lambda f: f.ts_ns):
            order = self.s.orders.get(f.client_order_id)
            if order is not None:
                reports.append(report(order, OrderStatus.PARTIALLY_FILLED, fill=f))
        self.s._apply_emit(reports, resolving=True)

    def _last_fill_ts(self) -> int:
        """Time of this venue's latest journaled fill (the last 500 journal entries are looked at)."""
        for _eid, fields in self.store.r.xrevrange(self.store.key("journal"), count=500):
            if fields.get(b"kind") == b"fill" and fields.get(b"venue", b"").decode() == self.venue:
                return from_json(fields[b"data"], Fill).ts_ns  # type: ignore[attr-defined]
        return 0

    async def _balances(self, rep: ReconcileReport) -> None:
        try:
            balances = await self.adapter.balances()
        except (VenueError, NotSent) as exc:
            log.warning("gateway:%s: balances unavailable: %s", self.venue, exc)
            return
        rep.balances = balances
        key = self.store.key(f"balances:{self.venue}")
        prev_raw = self.store.r.hgetall(key)
        if prev_raw:
            prev = {k.decode(): float(v) for k, v in prev_raw.items() if k != b"_journal_id"}
            since_id = prev_raw.get(b"_journal_id", b"0-0").decode()
            fills = [from_json(f[b"data"], Fill) for _, f in self.store.r.xrange(self.store.key("journal"),
                                                                                  min=f"({since_id}")
                     if f.get(b"kind") == b"fill" and f.get(b"venue", b"").decode() == self.venue]
            expected = expected_balance_change(fills)  # type: ignore[arg-type]
            for asset in set(prev) | set(balances):
                diff = balances.get(asset, 0.0) - prev.get(asset, 0.0) - expected.get(asset, 0.0)
                if abs(diff) > BALANCE_TOLERANCE * max(1.0, abs(prev.get(asset, 0.0))):
                    rep.balance_differences[asset] = diff
        last = self.store.r.xrevrange(self.store.key("journal"), count=1)
        mapping: dict[str, Any] = {a: repr(v) for a, v in balances.items()}
        mapping["_journal_id"] = last[0][0].decode() if last else "0-0"
        pipe = self.store.r.pipeline(transaction=True)
        pipe.delete(key)
        pipe.hset(key, mapping=mapping)
        pipe.execute()

    def _record(self, rep: ReconcileReport) -> None:
        data = msgspec.json.encode(rep)
        pipe = self.store.r.pipeline(transaction=True)
        pipe.set(self.store.key(f"reconcile:{self.venue}"), data)
        pipe.xadd(self.store.key("journal"), {"kind": "reconcile", "event": rep.why, "venue": self.venue, "data": data})
        pipe.execute()


def _limit() -> Any:
    from cluster.messages import OrderType

    return OrderType.LIMIT
