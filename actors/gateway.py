"""`gateway:<venue>`: where orders leave the cluster, and where their state is owned.

One gateway per venue, the same code for every venue: the venue itself sits
behind a `VenueAdapter` (paper, Binance spot, Alpaca) and every status change
goes through the one `OrderStateMachine`. Every order is journaled in Redis
(PENDING_NEW) before it is sent; every fill is recorded with the order state and
position it produced in one Redis transaction, de-duplicated by the venue's
trade id. An order the venue did not answer for is UNKNOWN and is resolved by
querying its client order id, never by sending it again. A restarted gateway
rebuilds its open orders and positions from Redis, then reconciles with the
venue. If Redis is briefly unreachable, writes queue up in order and are
retried; nothing is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec
import ray
import redis

from actors.report_relay import StrategyReportRelay
from cluster.config import VenueSection
from cluster.messages import BookUpdate, ExecutionReport, Fill, Order, OrderStatus, Trade
from cluster.portfolio import Portfolio
from cluster.state_store import StateStore
from dashboards.metrics import GatewayMetrics
from gateways.order_state import (
    FILL_TOLERANCE,
    InvalidTransition,
    OrderEvent,
    OrderStateMachine,
    event_for_status,
)
from gateways.rate_limit import LimitStatus
from gateways.venue_adapter import (
    NotSent,
    OrderNotFound,
    PaperAdapter,
    VenueAdapter,
    VenueError,
    VenueRejected,
    VenueTimeout,
    report,
    reports_from_truth,
    venue_says_filled,
)

log = logging.getLogger(__name__)

RESOLVE_ATTEMPTS = 40
RESOLVE_BACKOFF_MAX_S = 2.0
CANCEL_RETRIES = 5
RATE_LIMIT_WAIT_MAX_S = 60.0
"""Longest single wait on a venue's back-off or ban before a query or cancel is tried again."""


class GatewayRejected(ValueError):
    """The gateway refused to take an order (malformed, duplicate id, not from risk)."""


def make_adapter(venue_name: str, cfg: VenueSection, incarnation: str, simulated: bool = False) -> VenueAdapter:
    """The adapter for the venue's `type`. API keys are read here, in the process that uses them: the venue
    simulator's when `simulated` (the launcher then points `cfg` at the simulator, see `VenueSection.on_simulator`)."""
    if cfg.type == "paper":
        return PaperAdapter(venue_name, cfg.maker_fee_bps, cfg.taker_fee_bps, f"{venue_name}-{incarnation}")
    from gateways.secrets import load_credentials, simulator_credentials

    creds = simulator_credentials(cfg.type) if simulated else load_credentials(cfg.type, cfg.secrets_file)
    if cfg.type == "binance":
        from gateways.binance.trading import BinanceAdapter

        return BinanceAdapter(venue_name, cfg.url("rest_url"), cfg.url("ws_url"), creds, cfg.recv_window_ms,
                              cfg.order_timeout_s, stream_url=cfg.stream_url)
    from gateways.alpaca.trading import AlpacaAdapter

    return AlpacaAdapter(venue_name, cfg.url("rest_url"), cfg.url("stream_url"), creds, cfg.order_timeout_s)


class GatewayService:
    """Order state, positions and the journal for one venue, without Ray.

    `emit` receives every report that changed an order (the actor forwards them to risk and the strategy).
    The async methods must run on one event loop; the service is not thread-safe.
    """

    def __init__(self, venue_name: str, cfg: VenueSection, store: StateStore, incarnation: str | None = None,
                 adapter: VenueAdapter | None = None,
                 emit: Callable[[list[ExecutionReport]], None] | None = None, simulated: bool = False) -> None:
        self.venue_name = venue_name
        self.cfg = cfg
        self.store = store
        self.incarnation = incarnation or uuid.uuid4().hex[:8]
        self.adapter = adapter or make_adapter(venue_name, cfg, self.incarnation, simulated)
        self.adapter.on_reports = self._on_stream_reports
        self.adapter.on_reconnect = lambda: self._spawn(self.reconcile("reconnect"))
        self.adapter.on_limit = self._on_limit
        self.emit: Callable[[list[ExecutionReport]], None] = emit or (lambda reports: None)
        self.on_limit: Callable[[LimitStatus], None] = lambda status: None
        self.sm = OrderStateMachine()
        self.portfolio = Portfolio()
        self.orders: dict[str, Order] = {}
        self.seen_trades: set[str] = set()
        self.sent_at: dict[str, float] = {}
        self.cancel_wanted: set[str] = set()
        self.resolving: set[str] = set()
        self.backing_off: set[str] = set()
        """New orders refused by a rate limit, waiting for the venue's back-off to send again."""
        self.backlog: deque[Callable[[], Any]] = deque()
        self.tasks: set[asyncio.Task] = set()
        self.last_reconcile: Any = None
        self.counters: dict[str, int] = {"orders": 0, "fills": 0, "duplicate_fills": 0, "invalid_reports": 0,
                                         "redis_retries": 0, "unknown": 0, "resolved": 0, "not_sent": 0,
                                         "queries": 0, "reconciles": 0, "send_retries": 0}

    @property
    def venue(self) -> Any:
        """The paper venue's matcher (paper only; kept for callers of the paper-era API)."""
        return getattr(self.adapter, "venue", None)

    async def start(self) -> None:
        """Connect to the venue, then reconcile what Redis says with what the venue says."""
        await self.adapter.start()
        for coid, o in list(self.orders.items()):
            if o.status is OrderStatus.PENDING_CANCEL:
                self._spawn(self.cancel_at_venue(coid))
        if self.adapter.orders_survive_restart:
            await self.reconcile("start")

    async def close(self) -> None:
        for t in list(self.tasks):
            t.cancel()
        await self.adapter.close()

    def restore(self) -> list[ExecutionReport]:
        """Rebuild from Redis. For the paper venue, orders it never acknowledged are lost and canceled;
        real venues keep theirs, and `start()` reconciles them."""
        positions, open_orders, seen = self.store.trading_snapshot()
        self.portfolio.load((p for p in positions if p.venue == self.venue_name), self.store.max_abs_positions())
        self.seen_trades = {s for s in seen if s.startswith(f"{self.venue_name}:")}
        applied: list[ExecutionReport] = []
        for o in (o for o in open_orders if o.venue == self.venue_name):
            self.orders[o.client_order_id] = o
            if self.adapter.restore_order(o):
                if o.status is OrderStatus.PENDING_CANCEL:
                    self.cancel_wanted.add(o.client_order_id)  # `start()` sends the cancel again
            elif not self.adapter.orders_survive_restart:
                lost = report(o, OrderStatus.CANCELED, reason="gateway restarted before the venue saw it")
                applied.extend(r for r in [self.apply(lost)] if r is not None)
        self.emit(applied)
        return applied

    # -- orders in ---------------------------------------------------------------------------------
    def accept(self, order: Order) -> None:
        if order.status is not OrderStatus.PENDING_NEW:
            raise GatewayRejected(f"order {order.client_order_id} must be pending_new, is {order.status.value}")
        if order.venue != self.venue_name:
            raise GatewayRejected(f"order {order.client_order_id} is for venue {order.venue}, not {self.venue_name}")
        if order.client_order_id in self.orders:
            raise GatewayRejected(f"duplicate client order id {order.client_order_id}")
        self.orders[order.client_order_id] = order
        self.counters["orders"] += 1
        self._persist(lambda: self.store.record_order(order, "submit"))

    async def send(self, order: Order) -> list[ExecutionReport]:
        """Send a journaled PENDING_NEW order once. No answer -> UNKNOWN and a query, never a second send.

        A rate-limit refusal (a 429 back-off, a 418 ban, our own count of the venue's limit) means the
        venue did not act on it: the same order, with the same client order id, is sent again after the
        venue's back-off if that ends within `order_timeout_s` of the first attempt; otherwise it is
        rejected with a reason that says so. Before sending again the venue is asked for the client
        order id: if an earlier attempt did arrive after all, its state is applied and nothing is sent
        (and a venue that answers a resend with a duplicate-id error sends it to a query): an order is
        never placed twice.
        """
        coid = order.client_order_id
        current = self.orders.get(coid)
        if current is None or current.status is not OrderStatus.PENDING_NEW or coid in self.sent_at:
            return []  # canceled before it was sent, or already sent
        first = time.monotonic()
        timeout = float(self.cfg.order_timeout_s)
        retry = False
        while True:
            self.sent_at[coid] = time.monotonic()
            try:
                if retry:
                    placed = await self._placed_after_all(current)
                    if placed is not None:
                        return placed
                reports = await self.adapter.submit(current)
            except NotSent as exc:
                self.counters["not_sent"] += 1
                wait = exc.retry_after_s
                used = time.monotonic() - first
                if wait is None:
                    return self._apply_emit([report(current, OrderStatus.REJECTED, reason=f"not sent: {exc}")])
                if used + wait > timeout:
                    why = (f"not sent: {exc}; the venue's back-off ({wait:.1f}s) outlasts the order timeout "
                           f"({timeout:g}s, {used:.1f}s used)")
                    return self._apply_emit([report(current, OrderStatus.REJECTED, reason=why)])
                self.counters["send_retries"] += 1
                log.info("gateway:%s: %s refused by the rate limit (%s); sending again in %.2fs", self.venue_name,
                         coid, exc, wait)
                self._persist(lambda o=current: self.store.record_order(o, "send_retry"))
                self.backing_off.add(coid)
                try:
                    await asyncio.sleep(max(wait, 0.01))
                finally:
                    self.backing_off.discard(coid)
                current = self.orders.get(coid)
                if current is None or current.status is not OrderStatus.PENDING_NEW:
                    return []  # canceled while it waited: never sent
                retry = True
                continue
            except (VenueTimeout, VenueError) as exc:
                return self._unknown(coid, f"new order: {exc}")
            return self._apply_emit(reports)

    async def _placed_after_all(self, order: Order) -> list[ExecutionReport] | None:
        """Before a resend: None if the venue has no order with this client order id, else its state applied."""
        self.counters["queries"] += 1
        try:
            truth = await self.adapter.query(order)
        except OrderNotFound:
            return None
        log.warning("gateway:%s: %s was placed by an attempt the venue refused; not sending it again",
                    self.venue_name, order.client_order_id)
        if truth.venue_order_id and order.venue_order_id is None:
            order = self.orders[order.client_order_id] = msgspec.structs.replace(
                order, venue_order_id=truth.venue_order_id)
        self.counters["resolved"] += 1
        return self._apply_emit(reports_from_truth(order, truth))

    def request_cancel(self, client_order_id: str) -> bool:
        order = self.orders.get(client_order_id)
        if order is None or order.status.is_terminal or order.status is OrderStatus.PENDING_CANCEL:
            return False
        if order.status is OrderStatus.PENDING_NEW and (client_order_id not in self.sent_at
                                                        or client_order_id in self.backing_off):
            # Not at the venue (not sent yet, or refused by a rate limit): cancel locally, it will never be sent.
            self._apply_emit([report(order, OrderStatus.CANCELED, reason="canceled before sending")])
            return False
        self.cancel_wanted.add(client_order_id)
        if order.status is OrderStatus.UNKNOWN or (order.status is OrderStatus.PENDING_NEW):
            return False  # the resolution (or the ack) decides; `cancel_wanted` makes it cancel then
        order = self.sm.transition(order, OrderEvent.CANCEL_REQUESTED)
        self.orders[client_order_id] = order
        done = order
        self._persist(lambda: self.store.record_order(done, "cancel_requested"))
        return True

    async def cancel_at_venue(self, client_order_id: str) -> list[ExecutionReport]:
        attempt = 0
        while attempt < CANCEL_RETRIES:
            order = self.orders.get(client_order_id)
            if order is None or order.status.is_terminal:
                return []
            try:
                return self._apply_emit(await self.adapter.cancel(order))
            except OrderNotFound:
                # Filled or canceled first, or not there yet: ask what happened.
                return await self.resolve(client_order_id)
            except NotSent as exc:
                self.counters["not_sent"] += 1
                if exc.retry_after_s is not None:
                    # A back-off or ban uses up no attempt: the cancel must get through once it ends.
                    await asyncio.sleep(min(max(exc.retry_after_s, 0.05), RATE_LIMIT_WAIT_MAX_S))
                    continue
                attempt += 1
                await asyncio.sleep(0.2 * attempt)
            except VenueRejected as exc:
                log.warning("gateway:%s: cancel %s refused: %s", self.venue_name, client_order_id, exc)
                return await self.resolve(client_order_id)
            except VenueError as exc:
                return self._unknown(client_order_id, f"cancel: {exc}")
        return await self.resolve(client_order_id)

    def on_book(self, update: BookUpdate) -> list[ExecutionReport]:
        return self._apply_emit(self.adapter.on_book(update))

    # -- UNKNOWN -------------------------------------------------------------------------------------
    def _unknown(self, client_order_id: str, why: str) -> list[ExecutionReport]:
        order = self.orders.get(client_order_id)
        if order is None or order.status.is_terminal:
            return []
        self.counters["unknown"] += 1
        log.warning("gateway:%s: %s is unknown (%s); resolving by query", self.venue_name, client_order_id, why)
        out = self._apply_emit([report(order, OrderStatus.UNKNOWN, reason=why)])
        self._spawn(self.resolve(client_order_id))
        return out

    async def resolve(self, client_order_id: str) -> list[ExecutionReport]:
        """Ask the venue for the order by client order id and apply its answer (fills included)."""
        if client_order_id in self.resolving:
            return []
        self.resolving.add(client_order_id)
        applied: list[ExecutionReport] = []
        delay = 0.05
        attempts = 0
        try:
            while attempts < RESOLVE_ATTEMPTS:
                attempts += 1
                order = self.orders.get(client_order_id)
                if order is None or order.status.is_terminal:
                    return applied
                self.counters["queries"] += 1
                try:
                    truth = await self.adapter.query(order)
                except OrderNotFound:
                    sent = self.sent_at.get(client_order_id)
                    age = time.monotonic() - sent if sent is not None else (time.time_ns() - order.updated_ts_ns) / 1e9
                    if age < self.adapter.not_found_grace_s:
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, RESOLVE_BACKOFF_MAX_S)
                        continue  # it may still be on its way; after the grace the venue would refuse it
                    applied += self._apply_emit([report(order, OrderStatus.REJECTED,
                                                        reason="venue has no such order")])
                    self.counters["resolved"] += 1
                    return applied
                except (VenueError, NotSent) as exc:
                    log.info("gateway:%s: query %s failed: %s", self.venue_name, client_order_id, exc)
                    if isinstance(exc, NotSent) and exc.retry_after_s is not None:
                        attempts -= 1  # rate limited: nothing was asked; wait for the back-off or ban to end
                        await asyncio.sleep(min(max(exc.retry_after_s, delay), RATE_LIMIT_WAIT_MAX_S))
                        continue
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RESOLVE_BACKOFF_MAX_S)
                    continue
                if truth.venue_order_id and order.venue_order_id is None:
                    order = self.orders[client_order_id] = msgspec.structs.replace(
                        order, venue_order_id=truth.venue_order_id)
                applied += self._apply_emit(reports_from_truth(order, truth), resolving=True)
                self.counters["resolved"] += 1
                now = self.orders.get(client_order_id)
                if now is not None and not now.status.is_terminal and client_order_id in self.cancel_wanted:
                    if now.status is not OrderStatus.PENDING_CANCEL:
                        self.request_cancel_after_resolve(client_order_id)
                    self._spawn(self.cancel_at_venue(client_order_id))
                return applied
            log.error("gateway:%s: could not resolve %s after %d queries", self.venue_name, client_order_id,
                      RESOLVE_ATTEMPTS)
            return applied
        finally:
            self.resolving.discard(client_order_id)

    def request_cancel_after_resolve(self, client_order_id: str) -> None:
        order = self.orders[client_order_id]
        try:
            order = self.sm.transition(order, OrderEvent.CANCEL_REQUESTED)
        except InvalidTransition:
            return
        self.orders[client_order_id] = order
        done = order
        self._persist(lambda: self.store.record_order(done, "cancel_requested"))

    # -- reports -----------------------------------------------------------------------------------
    def _on_stream_reports(self, reports: list[ExecutionReport]) -> None:
        self._apply_emit(reports)

    def _apply_emit(self, reports: list[ExecutionReport], resolving: bool = False) -> list[ExecutionReport]:
        needs_query: list[str] = []
        out = []
        for r in reports:
            applied = self.apply(r, needs_query)
            if applied is not None:
                out.append(applied)
        if not resolving:
            for coid in dict.fromkeys(needs_query):
                self._spawn(self.resolve(coid))
        for r in out:
            if r.status is OrderStatus.NEW and r.client_order_id in self.cancel_wanted:
                cur = self.orders.get(r.client_order_id)
                if cur is not None and cur.status is OrderStatus.NEW:
                    self.request_cancel_after_resolve(r.client_order_id)
                    self._spawn(self.cancel_at_venue(r.client_order_id))
        if out:
            self.emit(out)
        return out

    def apply_all(self, reports: list[ExecutionReport]) -> list[ExecutionReport]:
        return [r for r in (self.apply(r) for r in reports) if r is not None]

    def apply(self, report_: ExecutionReport, needs_query: list[str] | None = None) -> ExecutionReport | None:
        """Apply one venue report to the order it names; returns it (with the order's fields) if it changed anything.

        A terminal report that says more was filled than the fills we hold is not applied: the missing
        fills are fetched by query first (a cancel that raced a fill), so no fill is lost.
        """
        order = self.orders.get(report_.client_order_id)
        if order is None:
            if report_.fill is not None and f"{self.venue_name}:{report_.fill.trade_id}" in self.seen_trades:
                self.counters["duplicate_fills"] += 1
                return None
            if report_.fill is None:
                self.counters["late_reports"] = self.counters.get("late_reports", 0) + 1
                log.debug("gateway:%s: status for closed or unknown order %s", self.venue_name, report_.client_order_id)
                return None  # a stream event behind the REST answer that already closed the order
            self.counters["invalid_reports"] += 1
            log.warning("gateway:%s: fill for unknown order %s", self.venue_name, report_.client_order_id)
            return None
        if report_.venue_order_id and order.venue_order_id is None:
            order = msgspec.structs.replace(order, venue_order_id=report_.venue_order_id)
            self.orders[order.client_order_id] = order
        try:
            if report_.fill is not None:
                fill = msgspec.structs.replace(report_.fill, client_order_id=order.client_order_id,
                                               strategy=order.strategy, venue=self.venue_name, symbol=order.symbol,
                                               side=order.side)
                key = f"{self.venue_name}:{fill.trade_id}"
                if key in self.seen_trades:
                    self.counters["duplicate_fills"] += 1
                    return None
                venue_done = False
                if order.notional is not None and report_.status is OrderStatus.FILLED:
                    # The venue's word completes a notional order, once every fill it counts is ours.
                    venue_done = venue_says_filled(report_.status, report_.filled_qty, order.filled_qty + fill.qty)
                    if not venue_done and needs_query is not None:
                        needs_query.append(order.client_order_id)
                order = self.sm.apply_fill(order, fill, venue_done=venue_done)
                if report_.status.is_terminal and report_.status is not OrderStatus.FILLED \
                        and not order.status.is_terminal:
                    order = self.sm.transition(order, event_for_status(report_.status), report_.reason)
                self.seen_trades.add(key)
                position = self.portfolio.apply_fill(fill)
                max_abs = self.portfolio.max_abs_net(fill.symbol)
                self.counters["fills"] += 1
                done = order
                self._persist(lambda: self.store.record_fill(done, fill, position, max_abs))
                report_ = msgspec.structs.replace(report_, fill=fill)
            elif report_.status is order.status:
                return None
            elif report_.status is OrderStatus.FILLED and order.notional is not None and \
                    venue_says_filled(report_.status, report_.filled_qty, order.filled_qty):
                order = self.sm.complete_notional(order)
                done = order
                self._persist(lambda: self.store.record_order(done))
            else:
                tol = FILL_TOLERANCE * abs(order.qty) + 1e-12
                if (report_.status.is_terminal and report_.filled_qty > order.filled_qty + tol) or \
                        report_.status is OrderStatus.FILLED:  # FILLED comes with its fills, else fetch them
                    if needs_query is not None:
                        needs_query.append(order.client_order_id)
                    return None
                if report_.status is OrderStatus.UNKNOWN:
                    order = self.sm.transition(order, OrderEvent.TIMED_OUT, report_.reason)
                else:
                    order = self.sm.transition(order, event_for_status(report_.status), report_.reason)
                done = order
                self._persist(lambda: self.store.record_order(done))
        except InvalidTransition as exc:
            self.counters["invalid_reports"] += 1
            log.error("gateway:%s: %s", self.venue_name, exc)
            return None
        if order.status.is_terminal:
            self.orders.pop(order.client_order_id, None)
            self.cancel_wanted.discard(order.client_order_id)
            self.sent_at.pop(order.client_order_id, None)
        else:
            self.orders[order.client_order_id] = order
        return msgspec.structs.replace(report_, strategy=order.strategy, venue=self.venue_name, symbol=order.symbol,
                                       side=order.side, order_qty=order.qty, price=order.price, status=order.status,
                                       filled_qty=order.filled_qty, venue_order_id=order.venue_order_id)

    def repair_fill(self, order: Order, fill: Fill) -> ExecutionReport | None:
        """Record a fill the venue made for an order that is not open here (it went terminal while the
        gateway was away, or its record was lost): journal, order and position in one transaction,
        de-duplicated by trade id; the report goes to risk and the strategy like any fill.

        The order keeps its terminal status unless the fill completes it (then FILLED). A notional
        order's quantity becomes what was filled. More than the order's quantity is recorded all the
        same (the venue's executions are the truth) and logged as an error.
        """
        key = f"{self.venue_name}:{fill.trade_id}"
        if key in self.seen_trades:
            self.counters["duplicate_fills"] += 1
            return None
        fill = msgspec.structs.replace(fill, client_order_id=order.client_order_id, strategy=order.strategy,
                                       venue=self.venue_name, symbol=order.symbol, side=order.side)
        filled = order.filled_qty + fill.qty
        avg = (order.avg_fill_price * order.filled_qty + fill.price * fill.qty) / filled
        tol = FILL_TOLERANCE * abs(order.qty) + 1e-12
        qty, status = order.qty, order.status
        if order.notional is not None:
            qty = filled
        elif filled > order.qty + tol:
            log.error("gateway:%s: order %s: the venue filled %r of %r", self.venue_name, order.client_order_id,
                      filled, order.qty)
            qty = filled
        if filled >= qty - tol:
            status = OrderStatus.FILLED
        repaired = msgspec.structs.replace(order, qty=qty, status=status, filled_qty=filled, avg_fill_price=avg,
                                           reason=order.reason or "repaired by reconciliation",
                                           updated_ts_ns=time.time_ns())
        self.seen_trades.add(key)
        position = self.portfolio.apply_fill(fill)
        max_abs = self.portfolio.max_abs_net(fill.symbol)
        self.counters["fills"] += 1
        self.counters["repaired_fills"] = self.counters.get("repaired_fills", 0) + 1
        if order.client_order_id in self.orders and status.is_terminal:
            self.orders.pop(order.client_order_id, None)
        self._persist(lambda: self.store.record_fill(repaired, fill, position, max_abs))
        out = report(repaired, repaired.status, fill=fill, reason="repaired by reconciliation", filled_qty=filled)
        out = msgspec.structs.replace(out, venue_order_id=repaired.venue_order_id)
        self.emit([out])
        return out

    # -- reconciliation ------------------------------------------------------------------------------
    async def reconcile(self, why: str = "start") -> Any:
        from gateways.reconcile import Reconciler

        self.counters["reconciles"] += 1
        try:
            self.last_reconcile = await Reconciler(self).run(why)
        except (VenueError, NotSent) as exc:
            log.error("gateway:%s: reconciliation (%s) failed: %s", self.venue_name, why, exc)
            return None
        return self.last_reconcile

    def _on_limit(self, status: LimitStatus) -> None:
        log.warning("gateway:%s: venue rate limit %s (retry after %.1fs)", self.venue_name, status.state.value,
                    status.retry_after_s)
        self.on_limit(status)

    # -- Redis writes, in order, retried while Redis is away -------------------------------------------
    def _persist(self, write: Callable[[], Any]) -> None:
        self.backlog.append(write)
        self.flush()

    def flush(self) -> bool:
        while self.backlog:
            try:
                self.backlog[0]()
            except redis.RedisError as exc:
                self.counters["redis_retries"] += 1
                if self.counters["redis_retries"] <= 3 or self.counters["redis_retries"] % 100 == 0:
                    log.error("gateway:%s: redis write failed, %d queued: %s", self.venue_name, len(self.backlog), exc)
                return False
            self.backlog.popleft()
        return True

    def open_orders(self, strategy: str | None = None) -> list[Order]:
        return [o for o in self.orders.values() if strategy is None or o.strategy == strategy]

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            coro.close()
            return
        task = loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class GatewayActor:
    def __init__(self, venue_name: str, cfg: VenueSection, redis_url: str, cluster: str, risk_name: str = "risk",
                 simulated: bool = False):
        self.name = f"gateway:{venue_name}"
        self.metrics = GatewayMetrics(venue_name)
        self.tick_to_order_ns: deque[int] = deque(maxlen=100_000)
        self.latency_s = cfg.latency_ms / 1000.0 if cfg.type == "paper" else 0.0
        self.service = GatewayService(venue_name, cfg, StateStore.from_url(redis_url, cluster, timeout_s=1.0),
                                      emit=self._notify, simulated=simulated)
        self.service.on_limit = self._notify_limit
        self.risk_name = risk_name
        self.reports = StrategyReportRelay(lookup=lambda n: ray.get_actor(f"strategy:{n}"),
                                           send=lambda h, r: h.on_report.remote(r))
        self.risk: Any = None
        loop = asyncio.get_event_loop()
        self.flush_task = loop.create_task(self._flush_loop())
        self.service.restore()
        self.ready = loop.create_task(self.service.start())

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()

    async def submit(self, order: Order) -> bool:
        """Take an approved order: journaled before this returns, sent after the venue latency."""
        if order.trigger_ts_ns:  # the order has reached the gateway (journaling it is the gateway's own work)
            self.tick_to_order_ns.append(time.time_ns() - order.trigger_ts_ns)
        self.service.accept(order)
        self.metrics.on_order(order)
        self.service._spawn(self._send_later(order))
        return True

    async def cancel(self, client_order_id: str) -> bool:
        if not self.service.request_cancel(client_order_id):
            return False
        self.service._spawn(self._cancel_later(client_order_id))
        return True

    async def cancel_all(self, strategy: str | None = None) -> int:
        n = 0
        for o in self.service.open_orders(strategy):
            n += int(await self.cancel(o.client_order_id))
        return n

    def open_orders(self) -> list[Order]:
        return self.service.open_orders()

    def order(self, client_order_id: str) -> Order | None:
        """The order as this gateway holds it (open), else as Redis last recorded it."""
        return self.service.orders.get(client_order_id) or self.service.store.load_order(client_order_id)

    async def on_market(self, books: list[Any], trades: list[Trade], skipped: int) -> None:
        self.metrics.on_books(books)
        for b in books:
            self.service.on_book(b)

    async def reconcile(self) -> dict[str, Any]:
        rep = await self.service.reconcile("requested")
        return msgspec.to_builtins(rep) if rep is not None else {}

    async def balances(self) -> dict[str, float]:
        return await self.service.adapter.balances()

    def stats(self) -> dict[str, Any]:
        return {"counters": dict(self.service.counters), "open_orders": len(self.service.orders),
                "backlog": len(self.service.backlog)}

    def tick_to_order(self, clear: bool = False) -> list[int]:
        """Nanoseconds from the market message reaching its feed to the approved order reaching this gateway."""
        out = list(self.tick_to_order_ns)
        if clear:
            self.tick_to_order_ns.clear()
        return out

    async def _send_later(self, order: Order) -> None:
        if not self.ready.done():
            await asyncio.shield(self.ready)
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        await self.service.send(order)

    async def _cancel_later(self, client_order_id: str) -> None:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        await self.service.cancel_at_venue(client_order_id)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            self.service.flush()
            await self._check_report_calls()
            self.metrics.state(self.service.portfolio.positions(), len(self.service.orders), len(self.service.backlog))

    async def _check_report_calls(self) -> None:
        """A strategy whose last report call died is gone (moved): look its name up again."""
        for name, ref in list(self.reports.last_call.items()):
            ready, _ = ray.wait([ref], timeout=0)
            if not ready:
                continue
            try:
                await ref
            except ray.exceptions.RayActorError:
                self.reports.forget(name)
            except Exception:  # the strategy raised: it is alive, its handle stays
                pass

    def _notify_limit(self, status: LimitStatus) -> None:
        """Tell risk that a venue throttles or bans us (a risk without `on_venue_limit` ignores it)."""
        try:
            if self.risk is None:
                self.risk = ray.get_actor(self.risk_name)
            self.risk.on_venue_limit.remote(status.venue, status.state.value, status.retry_after_s)
        except Exception:
            self.risk = None

    def _notify(self, reports: list[ExecutionReport]) -> None:
        """Tell risk (reservations, positions) and the owning strategy; neither may block the gateway."""
        self.metrics.on_reports(reports)
        for r in reports:
            try:
                if self.risk is None:
                    self.risk = ray.get_actor(self.risk_name)
                self.risk.on_report.remote(r)
            except Exception:
                self.risk = None  # a restarted risk rebuilds from Redis
            self.reports.deliver(r)

    def attach_strategy(self, name: str, handle: Any) -> None:
        """The launcher names the (new) actor of strategy `name`; it gets its recent reports again."""
        self.reports.attach(name, handle)
