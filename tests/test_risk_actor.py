"""The risk actor under Ray: reconcile loop, decisions not waiting on the gateway hop, per-order ordering,
gateway refusals released, kill switch via `risk:controls`, and the stop-loss exit sequence.

A stub gateway (named `gateway:<venue>`, as the real one) records the calls it gets, in order.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import ray

from actors.risk import GATEWAY_TIMEOUT_S, RiskActor
from cluster.config import RiskLimits, RiskSection, SymbolSection
from cluster.messages import (
    ExecutionReport,
    IntentAction,
    MarkPrice,
    Order,
    OrderIntent,
    OrderStatus,
    OrderType,
    Position,
    RejectReason,
    Side,
    TimeInForce,
)
from cluster.state_store import StateStore

S = 1_000_000_000


@ray.remote(num_cpus=0)
class StubGateway:
    def __init__(self, open_orders: list[Order], ready: bool = True) -> None:
        self.open = {o.client_order_id: o for o in open_orders}
        self.ready = ready
        self.delay = 0.0
        self.refuse_next = False
        self.calls: list[tuple[str, Any]] = []
        self.risk: Any = None

    def attach(self, risk: Any) -> None:
        self.risk = risk

    def set(self, **kw: Any) -> None:
        for k, v in kw.items():
            setattr(self, k, v)

    async def submit(self, order: Order) -> bool:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.refuse_next:
            self.refuse_next = False
            raise RuntimeError(f"duplicate client order id {order.client_order_id}")
        self.calls.append(("submit", order))
        self.open[order.client_order_id] = order
        return True

    async def cancel(self, coid: str) -> bool:
        self.calls.append(("cancel", coid))
        o = self.open.pop(coid, None)
        if o is None:
            return False
        if self.risk is not None:
            await self.risk.on_report.remote(ExecutionReport(
                client_order_id=coid, strategy=o.strategy, venue=o.venue, symbol=o.symbol,
                status=OrderStatus.CANCELED, side=o.side, order_qty=o.qty))
        return True

    async def cancel_all(self, strategy: str | None = None) -> int:
        self.calls.append(("cancel_all", strategy))
        return 0

    def open_orders(self) -> list[Order]:
        if not self.ready:
            raise RuntimeError("gateway still starting")
        return list(self.open.values())

    def get_calls(self) -> list[tuple[str, Any]]:
        return list(self.calls)


@ray.remote(num_cpus=0)
class StubStrategy:
    def __init__(self) -> None:
        self.reports: list[ExecutionReport] = []

    async def on_report(self, report: ExecutionReport) -> None:
        self.reports.append(report)

    def got(self) -> list[ExecutionReport]:
        return list(self.reports)


def wait_for(what: Callable[[], Any], timeout: float = 15.0, step: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(step)


def order(coid: str, strategy: str, venue: str, symbol: str, side: Side, qty: float, price: float) -> Order:
    return Order(client_order_id=coid, strategy=strategy, venue=venue, symbol=symbol, side=side, qty=qty,
                 order_type=OrderType.LIMIT, price=price, status=OrderStatus.NEW, created_ts_ns=time.time_ns())


def marks(venue: str, symbol: str, mid: float, ts_ns: int | None = None) -> list[MarkPrice]:
    return [MarkPrice(venue=venue, symbol=symbol, mid=mid, ts_ns=ts_ns or time.time_ns())]


def test_reconcile_loop_forwarding_order_refusals_and_kill_switch(ray_session, redis_url):
    venue, sym, strat, cluster = "rtv1", "RTA", "rt-s1", "ra1"
    syms = [SymbolSection(symbol=sym, venue=venue, price=100.0, lot_size=0.001, tick_size=0.01)]
    section = RiskSection(defaults=RiskLimits(max_orders_per_min=1000), max_drawdown_pct=None, stop_loss_atr=None)
    store = StateStore.from_url(redis_url, cluster)
    stale = order("stale-1", strat, venue, sym, Side.BUY, 1.0, 99.0)  # the gateway no longer has it
    kept = order("kept-1", strat, venue, sym, Side.BUY, 2.0, 98.0)
    store.record_order(stale)
    store.record_order(kept)
    only_at_gw = order("gw-1", "rt-other", venue, sym, Side.SELL, 1.0, 102.0)
    gw = StubGateway.options(name=f"gateway:{venue}").remote([kept, only_at_gw], ready=False)
    st = StubStrategy.options(name=f"strategy:{strat}").remote()
    risk = RiskActor.remote(section, syms, [venue], redis_url, cluster)
    try:
        ray.get(gw.attach.remote(risk))
        ray.get(risk.on_marks.remote(marks(venue, sym, 100.0)))

        def ask(**kw: Any) -> Any:
            i = OrderIntent(**{"strategy": strat, "venue": venue, "symbol": sym, "side": Side.BUY, "qty": 1.0,
                               "price": 99.5, **kw})
            return ray.get(risk.submit.remote(i), timeout=30)

        # 1. Until the gateway answers with its open orders, the venue's orders are refused.
        d = ask()
        assert d.reason is RejectReason.RISK_UNAVAILABLE and "reconciled" in d.detail
        assert ray.get(risk.status.remote())["reservations"] == 2  # stale-1 and kept-1, from Redis
        ray.get(gw.set.remote(ready=True))
        status = wait_for(lambda: (s := ray.get(risk.status.remote()))["ready_venues"] == [venue] and s)
        assert status["reservations"] == 2  # kept-1 and gw-1: stale-1 released, gw-1 added

        # 2. The decision does not wait for the gateway's hop; a cancel reaches the gateway after its order.
        ray.get(gw.set.remote(delay=1.0))
        a = ask(price=99.4)
        assert a.approved and a.client_order_id
        assert all(c[0] != "submit" for c in ray.get(gw.get_calls.remote()))  # still on its way
        cancel = ask(action=IntentAction.CANCEL, target_client_order_id=a.client_order_id)
        assert cancel.approved
        calls = wait_for(lambda: (c := ray.get(gw.get_calls.remote())) and any(x[0] == "cancel" for x in c) and c)
        assert [(k, v.client_order_id if k == "submit" else v) for k, v in calls] == [
            ("submit", a.client_order_id), ("cancel", a.client_order_id)]

        # 3. An order the gateway refuses: reservation released, strategy told, audit says so after the approval.
        ray.get(gw.set.remote(delay=0.0, refuse_next=True))
        before = ray.get(risk.status.remote())["reservations"]
        b = ask(price=99.3)
        assert b.approved
        wait_for(lambda: ray.get(risk.status.remote())["decisions"].get("gateway_refused") == 1)
        assert ray.get(risk.status.remote())["reservations"] == before
        reports = wait_for(lambda: ray.get(st.got.remote()))
        assert (reports[-1].client_order_id, reports[-1].status) == (b.client_order_id, OrderStatus.REJECTED)
        assert ray.get(risk.flush.remote()) == 0
        entries = store.audit_entries(count=10)[::-1]  # oldest first
        approved_at = next(i for i, e in enumerate(entries)
                           if e.get("reason") == "none" and json.loads(e["data"]).get("client_order_id") == b.client_order_id)
        refused_at = next(i for i, e in enumerate(entries) if e.get("kind") == "gateway_refused")
        assert approved_at < refused_at
        assert json.loads(entries[refused_at]["data"])["released"] is True
        assert store.stats()["rejected:gateway_unavailable"] == 1

        # 4. A kill switch written to Redis (as the CLI does) applies to the next orders, and cancels resting ones.
        store.set_kill_switch("global", True)
        wait_for(lambda: ask(price=99.2).reason is RejectReason.KILL_SWITCH)
        wait_for(lambda: ("cancel_all", None) in ray.get(gw.get_calls.remote()))
    finally:
        for h in (risk, gw, st):
            ray.kill(h, no_restart=True)


def test_stop_loss_cancels_the_strategys_working_orders_then_exits(ray_session, redis_url):
    venue, sym, strat, cluster = "rtv2", "RTB", "rt-s2", "ra2"
    syms = [SymbolSection(symbol=sym, venue=venue, price=100.0, lot_size=0.001, tick_size=0.01)]
    section = RiskSection(defaults=RiskLimits(max_slippage_bps=50), max_drawdown_pct=None, stop_loss_atr=2.0,
                          atr_bar_s=1.0, atr_period=2)
    store = StateStore.from_url(redis_url, cluster)
    store.r.hset(store.key("positions"), f"{strat}|{sym}",
                 b'{"strategy":"%s","venue":"%s","symbol":"%s","qty":2.0,"avg_price":100.0}' % (
                     strat.encode(), venue.encode(), sym.encode()))
    assert store.positions() == [Position(strategy=strat, venue=venue, symbol=sym, qty=2.0, avg_price=100.0)]
    working = order("w-1", strat, venue, sym, Side.BUY, 1.0, 95.0)
    store.record_order(working)
    gw = StubGateway.options(name=f"gateway:{venue}").remote([working])
    risk = RiskActor.remote(section, syms, [venue], redis_url, cluster)
    try:
        ray.get(gw.attach.remote(risk))
        wait_for(lambda: ray.get(risk.status.remote())["ready_venues"] == [venue])
        start = time.time_ns() - 6 * S  # bars of one second with a range of 1: ATR 1 once two have closed
        for k in range(4):
            ray.get(risk.on_marks.remote(marks(venue, sym, 100.0, start + k * S)))
            ray.get(risk.on_marks.remote(marks(venue, sym, 101.0, start + k * S + S // 2)))
        assert not [c for c in ray.get(gw.get_calls.remote()) if c[0] == "submit"]  # no stop yet
        time.sleep(0.3)  # breakers run at most every 0.25 s
        ray.get(risk.on_marks.remote(marks(venue, sym, 96.5)))  # below 100 - 2 x ATR
        calls = wait_for(lambda: (c := ray.get(gw.get_calls.remote())) and any(x[0] == "submit" for x in c) and c)
        kinds = [k for k, _ in calls]
        assert kinds.index("cancel") < kinds.index("submit")  # working orders first canceled, then the exit
        assert ("cancel", "w-1") in calls
        exit_order = next(v for k, v in calls if k == "submit")
        assert (exit_order.strategy, exit_order.side, exit_order.qty) == (strat, Side.SELL, 2.0)
        assert exit_order.order_type is OrderType.LIMIT and exit_order.tif is TimeInForce.IOC
        assert exit_order.price == pytest.approx(96.02)  # protected at mid - 50 bps, on the tick
        status = ray.get(risk.status.remote())
        assert status["reservations"] == 1  # the exit; w-1 was released on its cancel report
        ray.get(risk.flush.remote())
        details = [json.loads(e["data"])["detail"] for e in store.audit_entries() if "reason" in e]
        assert any(d.startswith("risk-stop exit") for d in details)
    finally:
        for h in (risk, gw):
            ray.kill(h, no_restart=True)


@ray.remote(num_cpus=0)
class LateGateway:
    """Takes every order, but only `delay` s after it is asked, blocking its loop (a gateway stuck on a slow
    Redis write): risk gives up on the order at GATEWAY_TIMEOUT_S, and a cancel from risk cannot stop it."""

    def __init__(self, redis_url: str, cluster: str, delay: float, risk: Any) -> None:
        self.store = StateStore.from_url(redis_url, cluster)
        self.delay = delay
        self.risk = risk
        self.canceled: list[str] = []

    def open_orders(self) -> list[Order]:
        return []

    async def submit(self, order: Order) -> bool:
        time.sleep(self.delay)
        self.store.record_order(order)  # journaled, as the gateway does before it answers
        # The venue's acknowledgement, which the gateway reports to risk as it does every report.
        self.risk.on_report.remote(ExecutionReport(
            client_order_id=order.client_order_id, strategy=order.strategy, venue=order.venue, symbol=order.symbol,
            status=OrderStatus.NEW, side=order.side, order_qty=order.qty, price=order.price))
        return True

    async def cancel(self, coid: str) -> bool:
        order = self.store.load_order(coid)
        self.risk.on_report.remote(ExecutionReport(
            client_order_id=coid, strategy=order.strategy, venue=order.venue, symbol=order.symbol,
            status=OrderStatus.CANCELED, side=order.side, order_qty=order.qty, price=order.price))
        self.canceled.append(coid)
        return True

    def canceled_orders(self) -> list[str]:
        return list(self.canceled)

    async def cancel_all(self, strategy: str | None = None) -> int:
        return 0


def test_an_order_the_gateway_takes_after_risk_gave_up_is_reserved_again_and_canceled(ray_session, redis_url):
    venue, sym, strat, cluster = "rtv4", "RTD", "rt-s4", "ra4"
    syms = [SymbolSection(symbol=sym, venue=venue, price=100.0, lot_size=0.001, tick_size=0.01)]
    section = RiskSection(defaults=RiskLimits(max_orders_per_min=1000), max_drawdown_pct=None, stop_loss_atr=None)
    store = StateStore.from_url(redis_url, cluster)
    risk = RiskActor.remote(section, syms, [venue], redis_url, cluster)
    gw = LateGateway.options(name=f"gateway:{venue}").remote(redis_url, cluster, GATEWAY_TIMEOUT_S + 2.5, risk)
    try:
        wait_for(lambda: ray.get(risk.status.remote())["ready_venues"] == [venue])
        ray.get(risk.on_marks.remote(marks(venue, sym, 100.0)))
        d = ray.get(risk.submit.remote(OrderIntent(strategy=strat, venue=venue, symbol=sym, side=Side.BUY, qty=2.0,
                                                   price=99.5)), timeout=30)
        assert d.approved and ray.get(risk.status.remote())["reservations"] == 1
        # No answer in time and nothing journaled yet: risk gives up and releases the reservation ...
        wait_for(lambda: ray.get(risk.status.remote())["decisions"].get("gateway_refused") == 1, 20)
        # ... then the gateway takes the order after all: it is live, so risk reserves it again (the event says so).
        wait_for(lambda: ray.get(risk.status.remote())["decisions"].get("gateway_took_late") == 1, 20)
        assert ray.get(risk.flush.remote()) == 0
        events = {e.get("kind"): json.loads(e["data"]) for e in store.audit_entries(count=10) if e.get("kind")}
        assert events["gateway_refused"]["released"] is True
        assert events["gateway_took_late"] == {"client_order_id": d.client_order_id, "strategy": strat,
                                               "venue": venue, "symbol": sym, "open_qty": 2.0}
        # The strategy was told it was rejected, so nobody works it: risk cancels it, and its end releases it.
        assert wait_for(lambda: ray.get(gw.canceled_orders.remote())) == [d.client_order_id]
        wait_for(lambda: ray.get(risk.status.remote())["reservations"] == 0)
    finally:
        for h in (risk, gw):
            ray.kill(h, no_restart=True)
