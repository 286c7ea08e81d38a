"""`risk`: the named singleton that arbitrates every order before a gateway sees it.

Decisions are made one at a time (check and reservation with no await between
them), so limits hold across every strategy on every node. Redis is read for
kill switches on every decision and written for the audit; if Redis cannot be
reached the order is refused (fail closed). A restarted risk actor rebuilds
positions and reservations from Redis before it answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import msgspec
import ray
import redis

from cluster.config import RiskSection, SymbolSection
from cluster.messages import (
    ExecutionReport,
    IntentAction,
    MarkPrice,
    Order,
    OrderIntent,
    RejectReason,
    RiskDecision,
)
from cluster.state_store import StateStore
from risk.engine import GLOBAL, RiskEngine

log = logging.getLogger(__name__)

GATEWAY_TIMEOUT_S = 2.0
KILL_POLL_S = 0.25
COID_BATCH = 64


class RiskService:
    """Risk actor logic without Ray: engine + Redis; gateways are passed in as handles."""

    def __init__(self, limits: RiskSection, symbols: list[SymbolSection], venues: list[str], store: StateStore):
        self.engine = RiskEngine(limits, symbols, venues)
        self.store = store
        self.coids: list[str] = []
        self.counts: dict[str, int] = {}
        self.restore()

    def restore(self) -> None:
        self.engine.load(*self.store.trading_snapshot())
        if self.engine.limits.kill_switch:
            self.store.set_kill_switch(GLOBAL, True)
        self.engine.kill_switches = self.store.kill_switches()
        self.engine.marks.update({s: (m, 0) for s, m in self.store.marks().items()})

    def next_coid(self) -> str:
        if not self.coids:
            self.coids = self.store.next_client_order_ids(COID_BATCH)
        return self.coids.pop(0)

    def decide(self, intent: OrderIntent) -> tuple[RiskDecision, Order | None]:
        """Check an intent; on approval reserve it and return the order to send."""
        try:
            self.engine.kill_switches = self.store.kill_switches()
        except redis.RedisError as exc:
            return self._refuse(intent, RejectReason.STATE_UNAVAILABLE, f"redis unavailable: {exc}"), None
        decision = self.engine.check(intent)
        order: Order | None = None
        if decision.approved and intent.action is IntentAction.NEW:
            try:
                coid = self.next_coid()
            except redis.RedisError as exc:
                return self._refuse(intent, RejectReason.STATE_UNAVAILABLE, f"redis unavailable: {exc}"), None
            order = Order(client_order_id=coid, strategy=intent.strategy, venue=intent.venue, symbol=intent.symbol,
                          side=intent.side, qty=intent.qty, order_type=intent.order_type, price=intent.price,
                          tif=intent.tif, created_ts_ns=time.time_ns())
            self.engine.reserve(order)
            decision = _with_coid(decision, coid)
        elif decision.approved:
            decision = _with_coid(decision, intent.target_client_order_id)
        return decision, order

    def _refuse(self, intent: OrderIntent, reason: RejectReason, detail: str) -> RiskDecision:
        return RiskDecision(approved=False, reason=reason, strategy=intent.strategy, venue=intent.venue,
                            symbol=intent.symbol, action=intent.action, detail=detail, ts_ns=time.time_ns())

    def audit(self, decision: RiskDecision) -> None:
        key = "approved" if decision.approved else decision.reason.value
        self.counts[key] = self.counts.get(key, 0) + 1
        try:
            self.store.audit_pipeline([decision])
        except redis.RedisError as exc:
            log.error("risk: audit write failed: %s", exc)


def _with_coid(decision: RiskDecision, coid: str | None) -> RiskDecision:
    return msgspec.structs.replace(decision, client_order_id=coid)


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class RiskActor:
    def __init__(self, limits: RiskSection, symbols: list[SymbolSection], venues: list[str], redis_url: str,
                 cluster: str):
        self.service = RiskService(limits, symbols, venues, StateStore.from_url(redis_url, cluster, timeout_s=0.5))
        self.gateways: dict[str, Any] = {}
        self.kill_task = asyncio.get_event_loop().create_task(self._watch_kill_switches())
        self.last_marks_flush = 0.0

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def _gateway(self, venue: str) -> Any:
        gw = self.gateways.get(venue)
        if gw is None:
            gw = self.gateways[venue] = ray.get_actor(f"gateway:{venue}")
        return gw

    async def submit(self, intent: OrderIntent) -> RiskDecision:
        decision, order = self.service.decide(intent)
        if decision.approved:
            decision = await self._forward(intent, decision, order)
        self.service.audit(decision)
        return decision

    async def _forward(self, intent: OrderIntent, decision: RiskDecision, order: Order | None) -> RiskDecision:
        try:
            gw = self._gateway(intent.venue)
            if order is not None:
                await asyncio.wait_for(gw.submit.remote(order), GATEWAY_TIMEOUT_S)
            else:
                await asyncio.wait_for(gw.cancel.remote(intent.target_client_order_id), GATEWAY_TIMEOUT_S)
            return decision
        except Exception as exc:
            self.gateways.pop(intent.venue, None)
            if order is not None:
                self._release_if_never_journaled(order.client_order_id)
            return self.service._refuse(intent, RejectReason.GATEWAY_UNAVAILABLE,
                                        f"gateway:{intent.venue} did not accept: {type(exc).__name__}")

    def _release_if_never_journaled(self, coid: str) -> None:
        """A gateway that journaled the order will report on it; one that did not never will."""
        try:
            if self.service.store.load_order(coid) is None:
                self.service.engine.release(coid)
        except redis.RedisError:
            log.error("risk: cannot tell if %s reached the gateway; keeping its reservation", coid)

    def on_report(self, report: ExecutionReport) -> None:
        self.service.engine.on_report(report)

    def on_marks(self, marks: list[MarkPrice]) -> None:
        for m in marks:
            self.service.engine.set_mark(m.symbol, m.mid, m.ts_ns)
        now = time.monotonic()
        if now - self.last_marks_flush > 1.0:
            self.last_marks_flush = now
            try:
                self.service.store.set_marks({s: v[0] for s, v in self.service.engine.marks.items()})
            except redis.RedisError as exc:
                log.warning("risk: could not store marks: %s", exc)

    async def set_kill_switch(self, scope: str, on: bool) -> None:
        self.service.store.set_kill_switch(scope, on)
        await self._apply_kill_switches(self.service.store.kill_switches())

    async def _watch_kill_switches(self) -> None:
        while True:
            await asyncio.sleep(KILL_POLL_S)
            try:
                await self._apply_kill_switches(self.service.store.kill_switches())
            except redis.RedisError as exc:
                log.warning("risk: cannot read kill switches: %s", exc)
            except Exception:
                log.exception("risk: kill switch watch failed")

    async def _apply_kill_switches(self, current: set[str]) -> None:
        """Switching a kill switch on also cancels the resting orders it covers."""
        newly_on = current - self.service.engine.kill_switches
        self.service.engine.kill_switches = current
        for scope in newly_on:
            for venue in self.service.engine.venues:
                if scope == GLOBAL or scope == f"venue:{venue}":
                    await self._cancel_all(venue, None)
                elif scope.startswith("strategy:"):
                    await self._cancel_all(venue, scope.split(":", 1)[1])

    async def _cancel_all(self, venue: str, strategy: str | None) -> None:
        try:
            await asyncio.wait_for(self._gateway(venue).cancel_all.remote(strategy), GATEWAY_TIMEOUT_S)
        except Exception as exc:
            self.gateways.pop(venue, None)
            log.error("risk: cancel-all on %s failed: %s", venue, type(exc).__name__)

    def status(self) -> dict[str, Any]:
        eng = self.service.engine
        return {"kill_switches": sorted(eng.kill_switches), "decisions": dict(self.service.counts),
                "reservations": len(eng.reservations), "net": dict(eng.net)}
