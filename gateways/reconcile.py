"""Reconciliation: what Redis says against what the venue says, at start and after every reconnect.

Four checks, each repaired and reported:

* open orders: every order Redis holds open is queried by client order id and
  brought to the venue's state, with the fills the venue lists (missed ones are
  recorded, known ones are dropped by trade id); an order open at the venue that
  carries this cluster's id prefix but that Redis does not hold open is canceled
  (nothing may trade unmanaged); foreign orders are reported and left alone.
* fills: every execution of the account since the last sweep (Binance
  `GET /api/v3/myTrades` per symbol, from the last trade id seen or by time;
  Alpaca `GET /v2/account/activities/FILL?after=`), for all orders, open or not,
  de-duplicated by venue trade id. A missed fill of an open order goes through
  the state machine; one of an order that went terminal while the gateway was
  away (or whose record was lost) is repaired in place: journal, order, position
  (`GatewayService.repair_fill`). Executions of orders with this cluster's id
  prefix that Redis does not know are recorded under strategy `unknown`; other
  clients' executions are only reported. The sweep's cursor (time, and the last
  trade id per symbol) is kept in Redis (`fills:cursor:<venue>`). A Redis with
  no trace of this venue (fresh start) starts the cursor now instead.
* balances: the venue's balances are stored in Redis (`balances:<venue>`), and
  the change since the previous snapshot is compared with the net of the fills
  journaled in between.
* positions, where the venue keeps them (Alpaca): the venue's net position per
  symbol against the sum of this venue's positions in Redis; differences are
  reported (not repaired: they cannot be attributed to a strategy).

The report goes to the log, to Redis (`reconcile:<venue>`) and to the journal
(`kind=reconcile`). It never contains credentials.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec

from cluster.messages import Fill, Order, OrderStatus, OrderType, Side, from_json
from gateways.venue_adapter import (
    NotSent,
    OrderNotFound,
    VenueError,
    VenueOrder,
    VenueTrade,
    report,
    reports_from_truth,
)

log = logging.getLogger(__name__)

BALANCE_TOLERANCE = 1e-6
POSITION_TOLERANCE = 1e-9
SWEEP_OVERLAP_NS = 60_000_000_000
"""Each fill sweep starts this long before the previous one did (clock skew; trade ids de-duplicate)."""
JOURNAL_SCAN = 2000
"""Journal entries looked at (newest first) for the last fill, when no sweep cursor exists yet."""
JOURNAL_SYMBOLS_SCAN = 50_000
UNKNOWN_STRATEGY = "unknown"


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
    fills_swept: int = 0
    """Executions the fill sweep listed (known ones included)."""
    terminal_orders_repaired: list[str] = []
    """Orders closed in Redis that the venue had more fills for: fills, order and position repaired."""
    unattributed_fills: list[str] = []
    """Trade ids of executions of this cluster's orders that Redis had no record of (recorded, strategy unknown)."""
    foreign_fills: list[str] = []
    """Trade ids of executions of other clients' orders on the account (not recorded)."""
    balances: dict[str, float] = {}
    balance_differences: dict[str, float] = {}
    position_differences: dict[str, float] = {}
    """Symbol -> venue position minus the sum of this venue's positions in Redis."""

    @property
    def clean(self) -> bool:
        return not (self.orders_changed or self.fills_recovered or self.orphans_canceled or self.unresolved
                    or self.balance_differences or self.terminal_orders_repaired or self.unattributed_fills
                    or self.position_differences)


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
        try:
            await self._fills(rep)
        except (VenueError, NotSent) as exc:  # the cursor stays: the next reconciliation sweeps again
            log.warning("gateway:%s: fill sweep failed: %s", self.venue, exc)
            rep.unresolved.append(f"fills: {exc}")
        rep.fills_recovered = sorted(k.split(":", 1)[1] for k in self.s.seen_trades - seen_before)
        await self._balances(rep)
        await self._positions(rep)
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
                    order_type=OrderType.LIMIT, price=vo.price)
                try:
                    await self.adapter.cancel(order)
                    rep.orphans_canceled.append(vo.client_order_id)
                except (VenueError, NotSent) as exc:
                    log.error("gateway:%s: cannot cancel orphan %s: %s", self.venue, vo.client_order_id, exc)
                    rep.unresolved.append(vo.client_order_id)
            else:
                rep.foreign_open_orders.append(vo.client_order_id)

    # -- fills ------------------------------------------------------------------------------------------
    def _cursor_key(self) -> str:
        return self.store.key(f"fills:cursor:{self.venue}")

    async def _fills(self, rep: ReconcileReport) -> None:
        """Sweep every execution since the last sweep; record the ones Redis lacks."""
        raw = self.store.r.hgetall(self._cursor_key())
        cursors = {k.decode()[3:]: v.decode() for k, v in raw.items() if k.startswith(b"id:")}
        started = time.time_ns()
        if b"ts_ns" in raw:
            since = int(raw[b"ts_ns"]) - SWEEP_OVERLAP_NS
        else:
            since = self._since_from_journal()
            if since is None:  # nothing of this venue in Redis: nothing of ours can have been missed
                self._save_cursor(started, {})
                return
        symbols = sorted(self._symbols(since) | set(cursors))
        trades, new_cursors = await self.adapter.trades_since(max(since, 0), symbols, cursors)
        rep.fills_swept = len(trades)
        vid_to_coid = {o.venue_order_id: c for c, o in self.s.orders.items() if o.venue_order_id}
        venue_orders: dict[str, VenueOrder | None] = {}
        for vt in sorted(trades, key=lambda t: t.fill.ts_ns):
            if f"{self.venue}:{vt.fill.trade_id}" in self.s.seen_trades:
                continue
            coid = vt.fill.client_order_id or vid_to_coid.get(vt.venue_order_id)
            vo: VenueOrder | None = None
            if not coid:
                if vt.venue_order_id not in venue_orders:
                    venue_orders[vt.venue_order_id] = await self._venue_order(vt)
                vo = venue_orders[vt.venue_order_id]
                if vo is None:
                    rep.unresolved.append(f"trade:{vt.fill.trade_id}")
                    continue
                coid = vo.client_order_id
                vid_to_coid[vt.venue_order_id] = coid
            self._apply_trade(rep, vt, coid, vo)
        cursors.update(new_cursors)
        self._save_cursor(started, cursors)

    def _apply_trade(self, rep: ReconcileReport, vt: VenueTrade, coid: str, vo: VenueOrder | None) -> None:
        fill = msgspec.structs.replace(vt.fill, client_order_id=coid)
        order = self.s.orders.get(coid)
        if order is not None:  # open here: through the state machine
            self.s._apply_emit([report(order, OrderStatus.PARTIALLY_FILLED, fill=fill)], resolving=True)
            return
        order = self.store.load_order(coid)
        if order is not None and order.venue != self.venue:
            order = None
        if order is None:
            if not coid.startswith(f"{self.store.cluster[:16]}-"):
                rep.foreign_fills.append(vt.fill.trade_id)
                return
            # Ours, but Redis lost its record: rebuild it from the venue so the fill is not lost.
            order = Order(client_order_id=coid, strategy=UNKNOWN_STRATEGY, venue=self.venue, symbol=fill.symbol,
                          side=fill.side, qty=vo.qty if vo is not None and vo.qty > 0 else fill.qty,
                          order_type=OrderType.LIMIT if vo is not None and vo.price else OrderType.MARKET,
                          price=vo.price if vo is not None else None,
                          status=vo.status if vo is not None and vo.status.is_terminal else OrderStatus.CANCELED,
                          venue_order_id=vt.venue_order_id, reason="rebuilt by reconciliation")
            rep.unattributed_fills.append(vt.fill.trade_id)
        if self.s.repair_fill(order, fill) is not None and order.strategy != UNKNOWN_STRATEGY \
                and coid not in rep.terminal_orders_repaired:
            rep.terminal_orders_repaired.append(coid)

    async def _venue_order(self, vt: VenueTrade) -> VenueOrder | None:
        """The venue's order behind a listed trade (its client order id), or None if the venue cannot say."""
        try:
            return await self.adapter.order_by_venue_id(vt.fill.symbol, vt.venue_order_id)
        except (VenueError, NotSent) as exc:
            log.warning("gateway:%s: order %s of trade %s unknown: %s", self.venue, vt.venue_order_id,
                        vt.fill.trade_id, exc)
            return None

    def _save_cursor(self, ts_ns: int, cursors: dict[str, str]) -> None:
        mapping: dict[str, str] = {"ts_ns": str(ts_ns), **{f"id:{sym}": v for sym, v in cursors.items()}}
        self.store.r.hset(self._cursor_key(), mapping=mapping)

    def _since_from_journal(self) -> int | None:
        """Where a first sweep starts: this venue's last journaled fill or oldest open order, whichever is
        earlier; else its latest journal entry; None when Redis has no trace of the venue."""
        candidates = [o.created_ts_ns or o.updated_ts_ns for o in self.s.orders.values()]
        latest_entry: int | None = None
        for eid, fields in self.store.r.xrevrange(self.store.key("journal"), count=JOURNAL_SCAN):
            if fields.get(b"venue", b"").decode() != self.venue:
                continue
            if latest_entry is None:
                latest_entry = int(eid.decode().split("-", 1)[0]) * 1_000_000
            if fields.get(b"kind") == b"fill":
                candidates.append(from_json(fields[b"data"], Fill).ts_ns)  # type: ignore[attr-defined]
                break
        candidates = [c for c in candidates if c > 0]
        if candidates:
            return min(candidates) - SWEEP_OVERLAP_NS
        return latest_entry - SWEEP_OVERLAP_NS if latest_entry is not None else None

    def _symbols(self, since_ns: int) -> set[str]:
        """Symbols this venue may have traded for us since `since_ns` (a venue like Binance needs them named)."""
        out = {o.symbol for o in self.s.orders.values()}
        out |= {p.symbol for p in self.s.portfolio.positions()}
        for _eid, fields in self.store.r.xrange(self.store.key("journal"), min=f"{max(since_ns, 0) // 1_000_000}-0",
                                                count=JOURNAL_SYMBOLS_SCAN):
            if fields.get(b"venue", b"").decode() == self.venue and fields.get(b"kind") in (b"order", b"fill"):
                try:
                    out.add(msgspec.json.decode(fields[b"data"])["symbol"])
                except (msgspec.DecodeError, KeyError, TypeError):
                    continue
        return out

    async def _positions(self, rep: ReconcileReport) -> None:
        try:
            venue = await self.adapter.positions()
        except (VenueError, NotSent) as exc:
            log.warning("gateway:%s: positions unavailable: %s", self.venue, exc)
            return
        if venue is None:
            return
        ours: dict[str, float] = {}
        for p in self.s.portfolio.positions():
            ours[p.symbol] = ours.get(p.symbol, 0.0) + p.qty
        for sym in set(venue) | set(ours):
            diff = venue.get(sym, 0.0) - ours.get(sym, 0.0)
            if abs(diff) > POSITION_TOLERANCE * max(1.0, abs(venue.get(sym, 0.0))):
                rep.position_differences[sym] = diff

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

