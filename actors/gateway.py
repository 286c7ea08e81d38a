"""`gateway:<venue>`: where orders leave the cluster, and where their state is owned.

Every order is journaled in Redis (PENDING_NEW) before it is sent; every fill is
recorded with the order state and position it produced in one Redis
transaction, de-duplicated by the venue's trade id. A restarted gateway rebuilds
its open orders and positions from Redis. If Redis is briefly unreachable,
writes queue up in order and are retried; nothing is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

import msgspec
import ray
import redis

from cluster.config import VenueSection
from cluster.messages import (
    BookUpdate,
    ExecutionReport,
    Order,
    OrderStatus,
    Trade,
)
from cluster.portfolio import Portfolio
from cluster.state_store import StateStore
from gateways.order_state import InvalidTransition, OrderEvent, OrderStateMachine, event_for_status
from gateways.paper import PaperVenue

log = logging.getLogger(__name__)


class GatewayRejected(ValueError):
    """The gateway refused to take an order (malformed, duplicate id, not from risk)."""


class GatewayService:
    """Order state, positions and the journal for one venue, without Ray."""

    def __init__(self, venue_name: str, cfg: VenueSection, store: StateStore, incarnation: str | None = None):
        self.venue_name = venue_name
        self.cfg = cfg
        self.store = store
        self.incarnation = incarnation or uuid.uuid4().hex[:8]
        self.venue = PaperVenue(cfg.maker_fee_bps, cfg.taker_fee_bps, trade_id_prefix=f"{venue_name}-{self.incarnation}")
        self.sm = OrderStateMachine()
        self.portfolio = Portfolio()
        self.orders: dict[str, Order] = {}
        self.seen_trades: set[str] = set()
        self.backlog: deque[Callable[[], Any]] = deque()
        self.counters: dict[str, int] = {"orders": 0, "fills": 0, "duplicate_fills": 0, "invalid_reports": 0,
                                         "redis_retries": 0}

    def restore(self) -> list[ExecutionReport]:
        """Rebuild from Redis. Orders the venue never acknowledged are canceled (the paper venue lost them)."""
        positions, open_orders, seen = self.store.trading_snapshot()
        self.portfolio.load((p for p in positions if p.venue == self.venue_name), self.store.max_abs_positions())
        self.seen_trades = {s for s in seen if s.startswith(f"{self.venue_name}:")}
        applied: list[ExecutionReport] = []
        for o in (o for o in open_orders if o.venue == self.venue_name):
            self.orders[o.client_order_id] = o
            if o.status in (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED, OrderStatus.PENDING_CANCEL):
                self.venue.restore(msgspec.structs.replace(o, status=OrderStatus.NEW if o.filled_qty == 0
                                                           else OrderStatus.PARTIALLY_FILLED))
                if o.status is OrderStatus.PENDING_CANCEL:
                    applied.extend(self.cancel_at_venue(o.client_order_id))
            else:
                lost = self._report_for(o, OrderStatus.CANCELED, "gateway restarted before the venue saw it")
                applied.extend(r for r in [self.apply(lost)] if r is not None)
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

    def send(self, order: Order) -> list[ExecutionReport]:
        current = self.orders.get(order.client_order_id)
        if current is None or current.status is not OrderStatus.PENDING_NEW:
            return []  # canceled before it was sent
        return self.apply_all(self.venue.submit(current))

    def request_cancel(self, client_order_id: str) -> bool:
        order = self.orders.get(client_order_id)
        if order is None or order.status.is_terminal or order.status is OrderStatus.PENDING_CANCEL:
            return False
        if order.status is OrderStatus.PENDING_NEW:
            # Not at the venue yet: cancel locally, it will never be sent.
            self.apply(self._report_for(order, OrderStatus.CANCELED, "canceled before sending"))
            return False
        order = self.sm.transition(order, OrderEvent.CANCEL_REQUESTED)
        self.orders[client_order_id] = order
        self._persist(lambda: self.store.record_order(order, "cancel_requested"))
        return True

    def cancel_at_venue(self, client_order_id: str) -> list[ExecutionReport]:
        if client_order_id not in self.orders:
            return []
        return self.apply_all(self.venue.cancel(client_order_id))

    def on_book(self, update: BookUpdate) -> list[ExecutionReport]:
        return self.apply_all(self.venue.on_book(update))

    # -- reports -----------------------------------------------------------------------------------
    def apply_all(self, reports: list[ExecutionReport]) -> list[ExecutionReport]:
        return [r for r in (self.apply(r) for r in reports) if r is not None]

    def apply(self, report: ExecutionReport) -> ExecutionReport | None:
        """Apply one venue report to the order it names; returns it if it changed anything."""
        order = self.orders.get(report.client_order_id)
        if order is None:
            self.counters["invalid_reports"] += 1
            log.warning("gateway:%s: report for unknown order %s", self.venue_name, report.client_order_id)
            return None
        try:
            if report.fill is not None:
                fill = report.fill
                key = f"{fill.venue}:{fill.trade_id}"
                if key in self.seen_trades:
                    self.counters["duplicate_fills"] += 1
                    return None
                order = self.sm.apply_fill(order, fill)
                if report.status.is_terminal and not order.status.is_terminal:
                    order = self.sm.transition(order, event_for_status(report.status), report.reason)
                self.seen_trades.add(key)
                position = self.portfolio.apply_fill(fill)
                max_abs = self.portfolio.max_abs_net(fill.symbol)
                self.counters["fills"] += 1
                done = order
                self._persist(lambda: self.store.record_fill(done, fill, position, max_abs))
            elif report.status is order.status:
                return None
            else:
                order = self.sm.transition(order, event_for_status(report.status), report.reason)
                done = order
                self._persist(lambda: self.store.record_order(done))
        except InvalidTransition as exc:
            self.counters["invalid_reports"] += 1
            log.error("gateway:%s: %s", self.venue_name, exc)
            return None
        if order.status.is_terminal:
            self.orders.pop(order.client_order_id, None)
        else:
            self.orders[order.client_order_id] = order
        return msgspec.structs.replace(report, status=order.status, filled_qty=order.filled_qty)

    def _report_for(self, order: Order, status: OrderStatus, reason: str) -> ExecutionReport:
        return ExecutionReport(client_order_id=order.client_order_id, strategy=order.strategy, venue=order.venue,
                               symbol=order.symbol, status=status, side=order.side, order_qty=order.qty,
                               filled_qty=order.filled_qty, price=order.price, reason=reason, ts_ns=time.time_ns())

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


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class GatewayActor:
    def __init__(self, venue_name: str, cfg: VenueSection, redis_url: str, cluster: str, risk_name: str = "risk"):
        self.name = f"gateway:{venue_name}"
        self.latency_s = cfg.latency_ms / 1000.0
        self.service = GatewayService(venue_name, cfg, StateStore.from_url(redis_url, cluster, timeout_s=1.0))
        self.risk_name = risk_name
        self.strategies: dict[str, Any] = {}
        self.risk: Any = None
        loop = asyncio.get_event_loop()
        self.tasks: set[asyncio.Task] = set()
        self.flush_task = loop.create_task(self._flush_loop())
        self._notify(self.service.restore())

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()

    async def submit(self, order: Order) -> bool:
        """Take an approved order: journaled before this returns, sent after the venue latency."""
        self.service.accept(order)
        self._spawn(self._send_later(order))
        return True

    async def cancel(self, client_order_id: str) -> bool:
        if not self.service.request_cancel(client_order_id):
            return False
        self._spawn(self._cancel_later(client_order_id))
        return True

    async def cancel_all(self, strategy: str | None = None) -> int:
        n = 0
        for o in self.service.open_orders(strategy):
            n += int(await self.cancel(o.client_order_id))
        return n

    def open_orders(self) -> list[Order]:
        return self.service.open_orders()

    async def on_market(self, books: list[Any], trades: list[Trade], skipped: int) -> None:
        if books and isinstance(books[0], ray.ObjectRef):
            books = list(await asyncio.gather(*books))
        for b in books:
            self._notify(self.service.on_book(b))

    def stats(self) -> dict[str, Any]:
        return {"counters": dict(self.service.counters), "open_orders": len(self.service.orders),
                "backlog": len(self.service.backlog)}

    async def _send_later(self, order: Order) -> None:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        self._notify(self.service.send(order))

    async def _cancel_later(self, client_order_id: str) -> None:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        self._notify(self.service.cancel_at_venue(client_order_id))

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            self.service.flush()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _notify(self, reports: list[ExecutionReport]) -> None:
        """Tell risk (reservations, positions) and the owning strategy; neither may block the gateway."""
        for r in reports:
            try:
                if self.risk is None:
                    self.risk = ray.get_actor(self.risk_name)
                self.risk.on_report.remote(r)
            except Exception:
                self.risk = None  # a restarted risk rebuilds from Redis
            handle = self.strategies.get(r.strategy)
            try:
                if handle is None:
                    handle = self.strategies[r.strategy] = ray.get_actor(f"strategy:{r.strategy}")
                handle.on_report.remote(r)
            except Exception:
                self.strategies.pop(r.strategy, None)
