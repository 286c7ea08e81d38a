"""`risk`: the named singleton that arbitrates every order before a gateway sees it.

Decisions are made one at a time (check and reservation with no await between
them), so limits hold across every strategy on every node. Before every decision
the kill switches and trading states are read from Redis (one round trip); if
Redis cannot be reached the order is refused (fail closed). Every decision goes to
the audit stream.

A (re)started risk actor restores positions, reservations of open orders, fills
already counted, rate usage (the audit of the last minute), peak equity, trading
states and limit overrides from Redis, then reconciles with each gateway's open
orders; until a venue is reconciled its orders are refused (`risk_unavailable`).

Loss breakers and ATR stops run on marks and fills (`RiskEngine.evaluate`). A stop
produces an exit intent in the owning strategy's name (tag `risk-stop`): the actor
cancels that strategy's working orders in the symbol, then submits the exit
through `submit` like any intent, so it is checked, reserved and audited.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import msgspec
import ray
import redis

from cluster.config import RiskSection, SymbolSection
from cluster.config_base import ConfigError
from cluster.messages import (
    ExecutionReport,
    IntentAction,
    MarkPrice,
    Order,
    OrderIntent,
    RejectReason,
    RiskDecision,
    Side,
)
from cluster.state_store import StateStore
from dashboards.metrics import RiskMetrics
from risk.engine import GLOBAL, RiskEngine, RiskEvents
from risk.limits import apply_overrides
from risk.losses import STOP_TAG
from risk.trading_state import TradingState, TradingStatus, decode_status, encode_status

log = logging.getLogger(__name__)

GATEWAY_TIMEOUT_S = 2.0
KILL_POLL_S = 0.25
EVALUATE_EVERY_S = 0.25
COID_BATCH = 64
USAGE_WINDOW_MS = 60_000


class RiskService:
    """Risk actor logic without Ray: engine + Redis; gateways are passed in as handles."""

    def __init__(self, limits: RiskSection, symbols: list[SymbolSection], venues: list[str], store: StateStore,
                 reconcile: bool = False):
        self.base_limits = limits
        self.engine = RiskEngine(limits, symbols, venues)
        self.store = store
        self.coids: list[str] = []
        self.counts: dict[str, int] = {}
        self.overrides: dict[str, str] = {}
        # Venues whose open orders were reconciled with the gateway; orders to others are refused.
        self.ready_venues: set[str] = set() if reconcile else set(venues)
        self.last_evaluate = 0.0
        self.restore()

    # -- restore -----------------------------------------------------------------------------------------
    def restore(self) -> None:
        eng = self.engine
        eng.load(*self.store.trading_snapshot())
        if self.base_limits.kill_switch:
            self.store.set_kill_switch(GLOBAL, True)
        self.refresh_controls()
        eng.marks.update({s: (m, 0) for s, m in self.store.marks().items()})
        for s, (m, _) in eng.marks.items():
            eng.exposure.set_price(s, m)
            eng.losses.set_mark(s, m, 0)
        self.apply_overrides(self.store.limit_overrides())
        values = self.store.risk_values()
        if "peak_equity" in values:
            eng.losses.peak_equity = max(float(values["peak_equity"]), eng.losses.equity())
        if "day" in values:
            eng.losses.day = values["day"]
            eng.losses.day_start = {k: float(v) for k, v in json.loads(values.get("day_start", "{}")).items()}
        since = time.time_ns() // 1_000_000 - USAGE_WINDOW_MS
        approved, cancels = [], []
        for d in self.store.audit_decisions_since(since):
            if not d.approved:
                continue
            if d.action is IntentAction.NEW and "qty" in d.values:
                side = Side.BUY if d.values.get("side", 1.0) > 0 else Side.SELL
                price = d.values.get("protection_price", d.values.get("price"))
                approved.append((d.strategy, d.venue, d.symbol, side, price, d.values["qty"], d.ts_ns))
            elif d.action is IntentAction.CANCEL:
                cancels.append((d.strategy, d.venue, d.ts_ns))
        eng.restore_usage(approved, cancels)

    def reconcile(self, venue: str, gateway_open: list[Order]) -> dict[str, int]:
        """Make reservations for `venue` match the gateway's open orders, then accept orders for it."""
        eng = self.engine
        at_gateway = {o.client_order_id: o for o in gateway_open if not o.status.is_terminal}
        released = [c for c, r in eng.reservations.items() if r.venue == venue and c not in at_gateway]
        for c in released:
            eng.release(c)
        added = 0
        for c, o in at_gateway.items():
            if c not in eng.reservations:
                eng._reserve(o)
                added += 1
            else:
                res = eng.reservations[c]
                if o.remaining < res.remaining:  # filled meanwhile: the fill reports follow
                    eng.exposure.add_open(res.strategy, res.venue, res.symbol, res.side, o.remaining - res.remaining)
                    res.remaining = o.remaining
        self.ready_venues.add(venue)
        summary = {"released": len(released), "added": added, "open": len(at_gateway)}
        try:
            self.store.audit_event("reconcile", json.dumps({"venue": venue, **summary}).encode())
        except redis.RedisError as exc:
            log.warning("risk: could not audit reconciliation: %s", exc)
        return summary

    # -- controls and limits from Redis ------------------------------------------------------------------
    def refresh_controls(self) -> set[str]:
        """Read kill switches and trading states; returns scopes newly halted or killed (their orders get canceled)."""
        kill, states_raw = self.store.risk_controls()
        eng = self.engine
        before = set(eng.kill_switches) | {s for s, st in eng.trading_states.items() if st.state is TradingState.HALTED}
        eng.kill_switches = kill
        states: dict[str, TradingStatus] = {}
        for scope, raw in states_raw.items():
            try:
                st = decode_status(raw)
            except (msgspec.DecodeError, msgspec.ValidationError):
                st = TradingStatus(state=TradingState.HALTED, reason=f"unreadable trading state {raw!r}")
            if st.state is not TradingState.ACTIVE:
                states[scope] = st
        for scope, old in eng.trading_states.items():
            if scope not in states and old.source in ("drawdown", "daily_loss"):
                eng.losses.rearm(scope, old.source)  # an operator cleared a breaker: measure from now
        eng.trading_states = states
        after = set(kill) | {s for s, st in states.items() if st.state is TradingState.HALTED}
        return after - before

    def apply_overrides(self, overrides: dict[str, str]) -> bool:
        """Apply `limits set` overrides (validated again here); returns whether the limits changed."""
        if overrides == self.overrides:
            return False
        try:
            values = {k: json.loads(v) for k, v in overrides.items()}
            section = apply_overrides(self.base_limits, values)
            section.validate(set(self.engine.symbols), None, self.engine.venues)
        except (ConfigError, ValueError) as exc:
            log.error("risk: ignoring invalid limit overrides %s: %s", overrides, exc)
            self.overrides = overrides
            return False
        self.overrides = overrides
        self.engine.set_limits(section)
        return True

    # -- decisions ---------------------------------------------------------------------------------------
    def next_coid(self) -> str:
        if not self.coids:
            self.coids = self.store.next_client_order_ids(COID_BATCH)
        return self.coids.pop(0)

    def decide(self, intent: OrderIntent, now: int | None = None) -> tuple[RiskDecision, Order | None]:
        """Check an intent; on approval reserve it and return the order to send."""
        if intent.venue not in self.ready_venues and intent.venue in self.engine.venues:
            return self._refuse(intent, RejectReason.RISK_UNAVAILABLE,
                                f"risk is restarting: not yet reconciled with gateway:{intent.venue}"), None
        try:
            self.refresh_controls()
        except redis.RedisError as exc:
            return self._refuse(intent, RejectReason.STATE_UNAVAILABLE, f"redis unavailable: {exc}"), None
        now = now if now is not None else time.time_ns()
        decision = self.engine.check(intent, now)
        order: Order | None = None
        if decision.approved and intent.action is IntentAction.NEW:
            try:
                coid = self.next_coid()
            except redis.RedisError as exc:
                return self._refuse(intent, RejectReason.STATE_UNAVAILABLE, f"redis unavailable: {exc}"), None
            order = self.engine.make_order(intent, decision, coid, now)
            self.engine.reserve(order, now)
            values = dict(decision.values)
            values["side"] = float(intent.side.sign)
            decision = msgspec.structs.replace(decision, client_order_id=coid, values=values)
        elif decision.approved:
            decision = _with_coid(decision, intent.target_client_order_id)
        if intent.tag == STOP_TAG:
            decision = msgspec.structs.replace(decision, detail=f"{STOP_TAG} exit: {decision.detail}")
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

    # -- loss breakers -------------------------------------------------------------------------------------
    def evaluate(self, now: int | None = None, force: bool = False) -> RiskEvents | None:
        """Run the breakers at most every EVALUATE_EVERY_S; persist trips, re-arms and equity."""
        mono = time.monotonic()
        if not force and mono - self.last_evaluate < EVALUATE_EVERY_S:
            return None
        self.last_evaluate = mono
        eng = self.engine
        events = eng.evaluate(now)
        losses = eng.losses
        pnl = losses.pnl_by_scope()
        equity = losses.equity(pnl)
        try:
            for scope in events.rearmed:
                self.store.set_trading_state(scope, None)
                self.store.audit_event("trading_state", json.dumps({"scope": scope, "state": "active",
                                                                    "source": "daily_loss", "reason": "new day"}).encode())
            for t in events.trips:
                self.store.set_trading_state(t.scope, encode_status(eng.trading_states[t.scope]))
                self.store.audit_event("trading_state", json.dumps({"scope": t.scope, "state": t.state.value,
                                                                    "source": t.source, "reason": t.reason,
                                                                    "values": t.values}).encode())
                log.warning("risk: %s -> %s: %s", t.scope, t.state.value, t.reason)
            self.store.set_risk_values({
                "peak_equity": repr(losses.peak_equity), "equity": repr(equity),
                "drawdown_pct": repr((losses.peak_equity - equity) / losses.peak_equity * 100.0),
                "day": losses.day, "day_start": json.dumps(losses.day_start),
                "pnl": json.dumps(pnl)})
        except redis.RedisError as exc:
            log.error("risk: could not persist risk state: %s", exc)
        return events

    def snapshot(self) -> dict[str, Any]:
        eng = self.engine
        losses = eng.losses
        equity = losses.equity()
        return {"kill_switches": sorted(eng.kill_switches), "decisions": dict(self.counts),
                "reservations": len(eng.reservations), "net": dict(eng.net),
                "trading_states": {k: {"state": v.state.value, "reason": v.reason, "source": v.source}
                                   for k, v in eng.trading_states.items()},
                "equity": equity, "peak_equity": losses.peak_equity,
                "drawdown_pct": (losses.peak_equity - equity) / losses.peak_equity * 100.0,
                "open_orders": {k: v for k, v in eng.open_counts.items() if v},
                "ready_venues": sorted(self.ready_venues), "overrides": dict(self.overrides)}


def _with_coid(decision: RiskDecision, coid: str | None) -> RiskDecision:
    return msgspec.structs.replace(decision, client_order_id=coid)


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class RiskActor:
    def __init__(self, limits: RiskSection, symbols: list[SymbolSection], venues: list[str], redis_url: str,
                 cluster: str):
        self.service = RiskService(limits, symbols, venues, StateStore.from_url(redis_url, cluster, timeout_s=0.5),
                                   reconcile=True)
        self.gateways: dict[str, Any] = {}
        self.last_marks_flush = 0.0
        self.tasks: set[asyncio.Task] = set()
        loop = asyncio.get_event_loop()
        self.kill_task = loop.create_task(self._watch_kill_switches())
        self.reconcile_task = loop.create_task(self._reconcile_all())
        self.metrics = RiskMetrics()
        self.venue_limits: dict[str, tuple[str, float]] = {}  # venue -> (state, until monotonic)

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def _gateway(self, venue: str) -> Any:
        gw = self.gateways.get(venue)
        if gw is None:
            gw = self.gateways[venue] = ray.get_actor(f"gateway:{venue}")
        return gw

    async def _reconcile_all(self) -> None:
        """Until each gateway has told us its open orders, orders for its venue are refused."""
        pending = set(self.service.engine.venues)
        while pending:
            for venue in sorted(pending):
                try:
                    orders = await asyncio.wait_for(self._gateway(venue).open_orders.remote(), GATEWAY_TIMEOUT_S)
                    summary = self.service.reconcile(venue, list(orders))
                    pending.discard(venue)
                    log.info("risk: reconciled with gateway:%s %s", venue, summary)
                except Exception as exc:
                    self.gateways.pop(venue, None)
                    log.debug("risk: gateway:%s not reachable yet: %s", venue, type(exc).__name__)
            if pending:
                await asyncio.sleep(0.2)

    async def submit(self, intent: OrderIntent) -> RiskDecision:
        t0 = time.perf_counter()
        limited = self._venue_limited(intent)
        if limited is not None:
            decision, order = limited, None
        else:
            decision, order = self.service.decide(intent)
        if decision.approved:
            decision = await self._forward(intent, decision, order)
        self.service.audit(decision)
        self.metrics.on_decision(decision, time.perf_counter() - t0)
        return decision

    def on_venue_limit(self, venue: str, state: str, retry_after_s: float) -> None:
        """A gateway reports the venue throttling (429) or banning (418) us: new orders wait it out here."""
        if state in ("backoff", "banned") and retry_after_s > 0:
            self.venue_limits[venue] = (state, time.monotonic() + retry_after_s)
            log.warning("risk: venue %s %s for %.1fs; new orders to it are refused", venue, state, retry_after_s)
        else:
            self.venue_limits.pop(venue, None)

    def _venue_limited(self, intent: OrderIntent) -> RiskDecision | None:
        limit = self.venue_limits.get(intent.venue)
        if limit is None or intent.action is not IntentAction.NEW:
            return None
        state, until = limit
        left = until - time.monotonic()
        if left <= 0:
            self.venue_limits.pop(intent.venue, None)
            return None
        return self.service._refuse(intent, RejectReason.GATEWAY_UNAVAILABLE,
                                    f"venue {intent.venue} {state} (rate limit) for another {left:.1f}s")

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

    async def on_report(self, report: ExecutionReport) -> None:
        self.service.engine.on_report(report)
        if report.fill is not None:
            self._after_evaluate(self.service.evaluate())

    async def on_marks(self, marks: list[MarkPrice]) -> None:
        for m in marks:
            self.service.engine.set_mark(m.symbol, m.mid, m.ts_ns)
        now = time.monotonic()
        if now - self.last_marks_flush > 1.0:
            self.last_marks_flush = now
            try:
                self.service.store.set_marks({s: v[0] for s, v in self.service.engine.marks.items()})
            except redis.RedisError as exc:
                log.warning("risk: could not store marks: %s", exc)
        self._after_evaluate(self.service.evaluate())

    def _after_evaluate(self, events: RiskEvents | None) -> None:
        if events is None or not (events.trips or events.exits):
            return
        halted = [t.scope for t in events.trips if t.state is TradingState.HALTED]
        self._spawn(self._act_on(halted, events.exits))

    async def _act_on(self, halted: list[str], exits: list[OrderIntent]) -> None:
        for scope in halted:
            await self._cancel_scope(scope)
        for intent in exits:
            await self._submit_stop_exit(intent)

    async def _submit_stop_exit(self, intent: OrderIntent) -> None:
        """Cancel the strategy's working orders in the symbol, wait (briefly) for their release, then exit."""
        eng = self.service.engine
        coids = [c for c, r in eng.reservations.items() if r.strategy == intent.strategy and r.symbol == intent.symbol]
        for c in coids:
            await self._cancel_one(intent.venue, c)
        deadline = time.monotonic() + 1.0
        while any(c in eng.reservations for c in coids) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        pos = eng.positions.get((intent.strategy, intent.symbol), 0.0)
        if pos == 0.0 or (pos > 0) != (intent.side is Side.SELL):
            return
        decision = await self.submit(msgspec.structs.replace(intent, qty=abs(pos)))
        log.warning("risk: stop-loss exit %s %s %s: %s", intent.strategy, intent.symbol, intent.side.value,
                    decision.detail)

    async def set_kill_switch(self, scope: str, on: bool) -> None:
        self.service.store.set_kill_switch(scope, on)
        await self._apply_controls()

    async def _watch_kill_switches(self) -> None:
        """Poll kill switches, trading states and limit overrides; evaluate breakers even without marks."""
        while True:
            await asyncio.sleep(KILL_POLL_S)
            try:
                await self._apply_controls()
                if self.service.apply_overrides(self.service.store.limit_overrides()):
                    log.warning("risk: limit overrides applied: %s", self.service.overrides)
                self._after_evaluate(self.service.evaluate())
                eng = self.service.engine
                self.metrics.state(eng.kill_switches, len(eng.reservations), {s: v[0] for s, v in eng.marks.items()})
            except redis.RedisError as exc:
                log.warning("risk: cannot read risk controls: %s", exc)
            except Exception:
                log.exception("risk: control watch failed")

    async def _apply_controls(self) -> None:
        """Switching a kill switch on (or a scope to halted) also cancels the resting orders it covers."""
        for scope in self.service.refresh_controls():
            await self._cancel_scope(scope)

    async def _cancel_scope(self, scope: str) -> None:
        eng = self.service.engine
        kind, _, name = scope.partition(":")
        if kind == "symbol":
            for c, r in list(eng.reservations.items()):
                if r.symbol == name:
                    await self._cancel_one(r.venue, c)
            return
        for venue in eng.venues:
            if scope == GLOBAL or scope == f"venue:{venue}":
                await self._cancel_all(venue, None)
            elif kind == "strategy":
                await self._cancel_all(venue, name)

    async def _cancel_one(self, venue: str, coid: str) -> None:
        try:
            await asyncio.wait_for(self._gateway(venue).cancel.remote(coid), GATEWAY_TIMEOUT_S)
        except Exception as exc:
            self.gateways.pop(venue, None)
            log.error("risk: cancel of %s on %s failed: %s", coid, venue, type(exc).__name__)

    async def _cancel_all(self, venue: str, strategy: str | None) -> None:
        try:
            await asyncio.wait_for(self._gateway(venue).cancel_all.remote(strategy), GATEWAY_TIMEOUT_S)
        except Exception as exc:
            self.gateways.pop(venue, None)
            log.error("risk: cancel-all on %s failed: %s", venue, type(exc).__name__)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def status(self) -> dict[str, Any]:
        return self.service.snapshot()
