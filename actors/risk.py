"""`risk`: the named singleton that arbitrates every order before a gateway sees it.

Decisions are made one at a time (check and reservation with no await between
them), so limits hold across every strategy on every node. The actor is the one
arbiter, so while it lives its in-memory state (reservations, positions, usage,
controls) is authoritative and a decision touches no Redis:

* kill switches, trading states and limit overrides are read from Redis in the
  background: at once when `risk:controls` announces a change (the CLI and the
  state store publish one with every write), and every KILL_POLL_S regardless. If
  the last good read is older than CONTROLS_MAX_AGE_S, or the last Redis read or
  write failed, orders are refused (`state_unavailable`): fail closed;
* what a decision writes (the audit entry, the stats, breaker trips, marks, equity)
  is queued in order and written behind, batched, by one writer (`_flush_loop`),
  retried in order while Redis is away;
* client order ids come in blocks from a Redis counter, topped up in the background;
* an approved order is sent to its gateway without awaiting the hop: the next intent
  is decided meanwhile. Per order the order of calls holds: a cancel (or cancel-all)
  is sent only once the gateway has taken the order it cancels. If the gateway
  refuses the order or does not take it within GATEWAY_TIMEOUT_S, its reservation is
  released (unless the gateway journaled it, and will report on it), the strategy
  gets a `rejected` report and the audit a `gateway_refused` entry.

What a restart rebuilds from Redis, and from where: positions, fills already
counted and the reservations of open orders from `positions`, `fills:seen` and
`orders:open` (the gateway's journal, written before an order is sent), then
reconciled with each gateway's open orders (a venue's orders are refused until
then); rate usage and the duplicate filter from the audit of the last minute and
the gateway journal's `submit` entries (so an audit entry lost in a crash before
its write costs nothing); peak equity, per-scope peaks and the trading day from
`risk:equity`; trading states and overrides from their hashes.

Loss breakers and ATR stops run on marks and fills (`RiskEngine.evaluate`). A stop
produces an exit intent in the owning strategy's name (tag `risk-stop`): the actor
cancels that strategy's working orders in the symbol, then submits the exit
through `submit` like any intent, so it is checked, reserved and audited.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
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
    OrderStatus,
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
MAX_UNANSWERED = 10_000  # orders given up on that risk still watches for a late answer
KILL_POLL_S = 0.25
# Decisions are refused when the controls were last read longer ago than this (Redis away, watcher stuck).
CONTROLS_MAX_AGE_S = 1.0
EVALUATE_EVERY_S = 0.25
COID_BATCH = 256
COID_LOW = 64  # top up in the background below this many ids in hand
USAGE_WINDOW_MS = 60_000
RETRY_S = 0.2
FLUSH_COALESCE_S = 0.002
# The write-behind queue holds at most this many entries (a long Redis outage must not eat the actor's memory):
# past it the oldest audit entries (decisions, events) are dropped, DROP_SLACK of the bound at a time so the
# trim is rare; trading-state entries (what a restart rebuilds breakers from) are never dropped.
MAX_PENDING = 100_000
DROP_SLACK = 0.01
DROP_LOG_EVERY = 10_000  # drops between two log lines

# An entry of the write-behind queue: a decision, ("event", kind, data) or ("state", scope, status JSON | None).
Write = RiskDecision | tuple[str, str, bytes | None]


class RiskService:
    """Risk actor logic without Ray: engine + Redis; gateways are passed in as handles.

    `write_behind=False` (tests, tools): every decision reads the controls and every write is made at once,
    as a plain function would. The actor sets `write_behind=True`: controls are read in the background
    (`apply_controls`), writes are queued (`take_pending` / `write_batch`), and a decision is refused when the
    controls are older than `controls_max_age_s` or Redis last failed."""

    def __init__(self, limits: RiskSection, symbols: list[SymbolSection], venues: list[str], store: StateStore,
                 reconcile: bool = False, write_behind: bool = False, controls_max_age_s: float = CONTROLS_MAX_AGE_S,
                 max_pending: int = MAX_PENDING):
        self.base_limits = limits
        self.engine = RiskEngine(limits, symbols, venues)
        self.store = store
        self.coids: list[str] = []
        self.counts: dict[str, int] = {}
        self.overrides: dict[str, str] = {}
        # Venues whose open orders were reconciled with the gateway; orders to others are refused.
        self.ready_venues: set[str] = set() if reconcile else set(venues)
        self.last_evaluate = 0.0
        self.write_behind = write_behind
        self.controls_max_age_s = controls_max_age_s
        self.controls_at = -1e18  # monotonic time of the last good read of the controls
        # Why the last Redis read / write failed; "" when the last one worked. Either refuses decisions.
        self.read_error = ""
        self.write_error = ""
        self.pending: list[Write] = []  # written behind, in this order
        self.max_pending = max_pending
        self.dropped_writes = 0  # audit entries dropped because the queue was full (Redis away too long)
        self.pending_marks: dict[str, float] = {}
        self.pending_values: dict[str, str] = {}
        self.unsaved_states: dict[str, TradingStatus | None] = {}  # breaker trips/re-arms not yet in Redis
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
        losses = eng.losses
        if "peak_equity" in values:
            losses.peak_equity = max(float(values["peak_equity"]), losses.equity())
        if "scope_peaks" in values:
            losses.scope_peaks = {k: float(v) for k, v in json.loads(values["scope_peaks"]).items()}
        if "day" in values:
            losses.day = values["day"]
            losses.day_start = {k: float(v) for k, v in json.loads(values.get("day_start", "{}")).items()}
        self.restore_usage()

    def restore_usage(self) -> None:
        """Rate windows and duplicates of the last minute: approved decisions in the audit, and (for any whose
        audit entry was still queued when risk died) the orders the gateway journaled as submitted."""
        since = time.time_ns() // 1_000_000 - USAGE_WINDOW_MS
        approved, cancels, seen = [], [], set()
        for d in self.store.audit_decisions_since(since):
            if not d.approved:
                continue
            if d.action is IntentAction.NEW and "qty" in d.values:
                side = Side.BUY if d.values.get("side", 1.0) > 0 else Side.SELL
                price = d.values.get("protection_price", d.values.get("price"))
                notional = d.values.get("notional") if d.values.get("is_notional") else None
                approved.append((d.strategy, d.venue, d.symbol, side, price, d.values["qty"], d.ts_ns, notional))
                seen.add(d.client_order_id)
            elif d.action is IntentAction.CANCEL:
                cancels.append((d.strategy, d.venue, d.ts_ns))
        for o in self.store.journal_orders_since(since):
            if o.client_order_id not in seen and o.created_ts_ns:
                approved.append((o.strategy, o.venue, o.symbol, o.side, o.price, o.qty, o.created_ts_ns, o.notional))
        self.engine.restore_usage(approved, cancels)

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
                eng.reserve_open(o)
                added += 1
            else:
                res = eng.reservations[c]
                if o.remaining < res.remaining:  # filled meanwhile: the fill reports follow
                    eng.exposure.add_open(res.strategy, res.venue, res.symbol, res.side, o.remaining - res.remaining)
                    res.remaining = o.remaining
        self.ready_venues.add(venue)
        summary = {"released": len(released), "added": added, "open": len(at_gateway)}
        self.write(("event", "reconcile", json.dumps({"venue": venue, **summary}).encode()))
        return summary

    # -- controls and limits from Redis ------------------------------------------------------------------
    def refresh_controls(self) -> set[str]:
        """Read kill switches and trading states now; returns scopes newly halted or killed."""
        try:
            kill, states_raw = self.store.risk_controls()
        except redis.RedisError as exc:
            self.read_error = f"{type(exc).__name__}: {exc}"
            raise
        return self.apply_controls(kill, states_raw)

    def apply_controls(self, kill: set[str], states_raw: dict[str, bytes]) -> set[str]:
        """Apply kill switches and trading states as read from Redis (breaker trips not yet written there stay);
        returns scopes newly halted or killed (their orders get canceled)."""
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
        for scope, unsaved in self.unsaved_states.items():
            if unsaved is None:
                states.pop(scope, None)
            else:
                states[scope] = unsaved
        for scope, old in eng.trading_states.items():
            if scope not in states and old.source in ("drawdown", "daily_loss"):
                eng.losses.rearm(scope, old.source)  # an operator cleared a breaker: measure from now
        eng.trading_states = states
        self.controls_at = time.monotonic()
        self.read_error = ""
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

    def unavailable(self) -> str | None:
        """Why decisions must be refused now (Redis away or the controls too old), or None."""
        if self.read_error or self.write_error:
            return f"redis unavailable: {self.write_error or self.read_error}"
        age = time.monotonic() - self.controls_at
        if age > self.controls_max_age_s:
            return f"risk controls last read from redis {age:.1f}s ago (> {self.controls_max_age_s:g}s)"
        return None

    # -- decisions ---------------------------------------------------------------------------------------
    def next_coid(self) -> str:
        """The next client order id; the block in hand is kept newest first (`pop()` takes the oldest)."""
        if not self.coids:
            self.coids = self.store.next_client_order_ids(COID_BATCH)[::-1]
        return self.coids.pop()

    def decide(self, intent: OrderIntent, now: int | None = None) -> tuple[RiskDecision, Order | None]:
        """Check an intent; on approval reserve it and return the order to send."""
        if intent.venue not in self.ready_venues and intent.venue in self.engine.venues:
            return self._refuse(intent, RejectReason.RISK_UNAVAILABLE,
                                f"risk is restarting: not yet reconciled with gateway:{intent.venue}"), None
        if not self.write_behind:
            try:
                self.refresh_controls()
            except redis.RedisError as exc:
                return self._refuse(intent, RejectReason.STATE_UNAVAILABLE, f"redis unavailable: {exc}"), None
        else:
            why = self.unavailable()
            if why is not None:
                return self._refuse(intent, RejectReason.STATE_UNAVAILABLE, why), None
        now = now if now is not None else time.time_ns()
        decision = self.engine.check(intent, now)
        order: Order | None = None
        if decision.approved and intent.action is IntentAction.NEW:
            try:
                coid = self.next_coid()
            except redis.RedisError as exc:
                self.read_error = f"{type(exc).__name__}: {exc}"
                return self._refuse(intent, RejectReason.STATE_UNAVAILABLE, f"redis unavailable: {exc}"), None
            order = self.engine.make_order(intent, decision, coid, now)
            self.engine.reserve(order, now)
            values = dict(decision.values)
            values["side"] = float(intent.side.sign)
            if intent.notional is not None:
                values["is_notional"] = 1.0
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
        self.write(decision)

    def gateway_refused(self, order: Order, detail: str, released: bool) -> None:
        """An approved order its gateway did not take: counted, audited after its decision."""
        self.counts["gateway_refused"] = self.counts.get("gateway_refused", 0) + 1
        self.write(("event", "gateway_refused", json.dumps({
            "client_order_id": order.client_order_id, "strategy": order.strategy, "venue": order.venue,
            "symbol": order.symbol, "detail": detail, "released": released}).encode()))

    def gateway_took_late(self, order: Order) -> None:
        """An order given up on (and perhaps released) that its gateway took after all: reserved again, audited."""
        self.counts["gateway_took_late"] = self.counts.get("gateway_took_late", 0) + 1
        self.write(("event", "gateway_took_late", json.dumps({
            "client_order_id": order.client_order_id, "strategy": order.strategy, "venue": order.venue,
            "symbol": order.symbol, "open_qty": order.remaining}).encode()))

    # -- the write-behind queue --------------------------------------------------------------------------
    def write(self, entry: Write) -> None:
        self.pending.append(entry)
        if len(self.pending) > self.max_pending:
            self._drop_oldest_audit()
        if not self.write_behind:
            self.flush()

    def _drop_oldest_audit(self) -> None:
        """The queue is full: drop its oldest decisions and events (audit and stats only) down to the bound less
        DROP_SLACK, so a decision never waits on Redis nor on a trim per entry. Trading-state entries stay, in
        order: without them a restart would forget a breaker's trip."""
        pending = self.pending
        excess = len(pending) - self.max_pending + max(1, int(self.max_pending * DROP_SLACK))
        kept: list[Write] = []
        dropped = cut = 0
        while cut < len(pending) and dropped < excess:
            e = pending[cut]
            if isinstance(e, tuple) and e[0] == "state":
                kept.append(e)
            else:
                dropped += 1
            cut += 1
        pending[:cut] = kept
        before, self.dropped_writes = self.dropped_writes, self.dropped_writes + dropped
        if dropped and (before == 0 or before // DROP_LOG_EVERY != self.dropped_writes // DROP_LOG_EVERY):
            log.error("risk: write-behind queue full (%d entries, Redis: %s): dropped the oldest %d audit entries, "
                      "%d in all", self.max_pending, self.write_error or self.read_error or "slow", dropped,
                      self.dropped_writes)

    def take_pending(self) -> tuple[list[Write], dict[str, float], dict[str, str]]:
        batch, marks, values = self.pending, self.pending_marks, self.pending_values
        self.pending, self.pending_marks, self.pending_values = [], {}, {}
        return batch, marks, values

    def write_batch(self, batch: list[Write], marks: dict[str, float], values: dict[str, str]) -> None:
        """Write one batch (raises redis.RedisError; may run in a thread: it touches only the store)."""
        self.store.write_risk_batch(batch, marks, values)

    def batch_written(self, batch: list[Write]) -> None:
        self.write_error = ""
        for e in batch:
            if isinstance(e, tuple) and e[0] == "state" and e[1] in self.unsaved_states:
                self.unsaved_states.pop(e[1])

    def batch_failed(self, batch: list[Write], marks: dict[str, float], values: dict[str, str],
                     exc: Exception) -> None:
        """Put a batch back in front, in order (newer marks and values win), within the queue's bound."""
        self.pending[:0] = batch
        if len(self.pending) > self.max_pending:
            self._drop_oldest_audit()
        self.pending_marks = {**marks, **self.pending_marks}
        self.pending_values = {**values, **self.pending_values}
        self.write_error = f"{type(exc).__name__}: {exc}"

    def flush(self) -> bool:
        batch, marks, values = self.take_pending()
        if not batch and not marks and not values:
            return True
        try:
            self.write_batch(batch, marks, values)
        except redis.RedisError as exc:
            self.batch_failed(batch, marks, values, exc)
            log.error("risk: redis write failed (%d entries kept, in order): %s", len(self.pending), exc)
            return False
        self.batch_written(batch)
        return True

    # -- loss breakers -------------------------------------------------------------------------------------
    def evaluate(self, now: int | None = None, force: bool = False) -> RiskEvents | None:
        """Run the breakers at most every EVALUATE_EVERY_S; queue trips, re-arms and equity for Redis."""
        mono = time.monotonic()
        if not force and mono - self.last_evaluate < EVALUATE_EVERY_S:
            return None
        self.last_evaluate = mono
        eng = self.engine
        events = eng.evaluate(now)
        losses = eng.losses
        pnl = losses.pnl_by_scope()
        equity = losses.equity(pnl)
        for scope in events.rearmed:
            self.unsaved_states[scope] = None
            self.write(("state", scope, None))
            self.write(("event", "trading_state", json.dumps({"scope": scope, "state": "active",
                                                              "source": "daily_loss", "reason": "new day"}).encode()))
        for t in events.trips:
            status = eng.trading_states[t.scope]
            self.unsaved_states[t.scope] = status
            self.write(("state", t.scope, encode_status(status)))
            self.write(("event", "trading_state", json.dumps({"scope": t.scope, "state": t.state.value,
                                                              "source": t.source, "reason": t.reason,
                                                              "values": t.values}).encode()))
            log.warning("risk: %s -> %s: %s", t.scope, t.state.value, t.reason)
        self.pending_values.update({
            "peak_equity": repr(losses.peak_equity), "equity": repr(equity),
            "drawdown_pct": repr((losses.peak_equity - equity) / losses.peak_equity * 100.0),
            "day": losses.day, "day_start": json.dumps(losses.day_start),
            "scope_peaks": json.dumps(losses.scope_peaks),
            "drawdowns": json.dumps(losses.drawdowns(pnl)), "pnl": json.dumps(pnl)})
        if not self.write_behind:
            self.flush()
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
                "drawdowns": losses.drawdowns(),
                "open_orders": {k: v for k, v in eng.open_counts.items() if v},
                "ready_venues": sorted(self.ready_venues), "overrides": dict(self.overrides),
                "pending_writes": len(self.pending), "dropped_writes": self.dropped_writes,
                "redis_error": self.write_error or self.read_error}


def _with_coid(decision: RiskDecision, coid: str | None) -> RiskDecision:
    return msgspec.structs.replace(decision, client_order_id=coid)


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class RiskActor:
    def __init__(self, limits: RiskSection, symbols: list[SymbolSection], venues: list[str], redis_url: str,
                 cluster: str):
        self.service = RiskService(limits, symbols, venues, StateStore.from_url(redis_url, cluster, timeout_s=0.5),
                                   reconcile=True, write_behind=True)
        self.gateways: dict[str, Any] = {}
        self.strategies: dict[str, Any] = {}
        self.last_marks_flush = 0.0
        self.tasks: set[asyncio.Task] = set()
        # Orders sent to a gateway that has not yet taken them: client order id -> (order, call, deadline).
        self.inflight: dict[str, tuple[Order, Any, float]] = {}
        # Orders given up on (no answer within GATEWAY_TIMEOUT_S) that the gateway may still take: coid -> order,
        # the latest MAX_UNANSWERED, until a report on the order comes; `releasing`: those whose journal check is
        # under way; `answered_late`: those reported on during that check (see `_taken_late`).
        self.unanswered: dict[str, Order] = {}
        self.releasing: set[str] = set()
        self.answered_late: set[str] = set()
        self.metrics = RiskMetrics()
        self.venue_limits: dict[str, tuple[str, float]] = {}  # venue -> (state, until monotonic)
        loop = asyncio.get_event_loop()
        self.loop = loop
        self.wake = asyncio.Event()
        self.write_lock = asyncio.Lock()  # one batch in flight at a time: batches land in Redis in order
        self.controls_changed = asyncio.Event()
        self.stopping = threading.Event()
        self.kill_task = loop.create_task(self._watch_kill_switches())
        self.flush_task = loop.create_task(self._flush_loop())
        self.reconcile_task = loop.create_task(self._reconcile_all())
        self.listener = threading.Thread(target=self._listen_controls, args=(redis_url, cluster), daemon=True,
                                         name="risk-controls")
        self.listener.start()

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
                    self.wake.set()
                    pending.discard(venue)
                    log.info("risk: reconciled with gateway:%s %s", venue, summary)
                except Exception as exc:
                    self.gateways.pop(venue, None)
                    log.debug("risk: gateway:%s not reachable yet: %s", venue, type(exc).__name__)
            if pending:
                await asyncio.sleep(0.2)

    # -- decisions -----------------------------------------------------------------------------------------
    async def submit(self, intent: OrderIntent) -> RiskDecision:
        """Decide; an approved order goes to its gateway without this awaiting the hop."""
        t0 = time.perf_counter()
        limited = self._venue_limited(intent)
        if limited is not None:
            decision, order = limited, None
        else:
            decision, order = self.service.decide(intent)
        if decision.approved:
            if order is not None:
                decision = self._send(intent, decision, order)
            else:
                self._spawn(self._forward_cancel(intent))
        self.service.audit(decision)
        self.wake.set()
        self.metrics.on_decision(decision, time.perf_counter() - t0)
        return decision

    async def submit_batch(self, intents: list[OrderIntent]) -> list[RiskDecision]:
        """`submit` for each intent, in order: one round trip for all that one market update produced."""
        return [await self.submit(i) for i in intents]

    def _send(self, intent: OrderIntent, decision: RiskDecision, order: Order) -> RiskDecision:
        try:
            gw = self._gateway(intent.venue)
            ref = gw.submit.remote(order)
        except Exception as exc:  # no such gateway (yet): nothing was sent
            self.gateways.pop(intent.venue, None)
            self.service.engine.release(order.client_order_id)
            return self.service._refuse(intent, RejectReason.GATEWAY_UNAVAILABLE,
                                        f"gateway:{intent.venue} unavailable: {type(exc).__name__}")
        coid = order.client_order_id
        self.inflight[coid] = (order, ref, time.monotonic() + GATEWAY_TIMEOUT_S)
        # A callback, not a task per order: the gateway's answer costs one hop back onto the loop.
        ref.future().add_done_callback(lambda f, c=coid: self.loop.call_soon_threadsafe(self._answered, c, f))
        return decision

    def _answered(self, coid: str, fut: Any) -> None:
        entry = self.inflight.pop(coid, None)
        if entry is None:  # timed out before (a late answer reads as cancelled: see `on_report`)
            return
        try:
            exc = fut.exception()
        except BaseException as cancelled:  # noqa: BLE001 - a cancelled call did not take the order either
            exc = cancelled
        if exc is not None:
            self.gateways.pop(entry[0].venue, None)
            self._spawn(self._not_taken(entry[0], f"{type(exc).__name__}: {exc}"))

    def _expire_inflight(self) -> None:
        """Orders the gateway has not taken within GATEWAY_TIMEOUT_S: never run them, release, say so."""
        now = time.monotonic()
        for coid, (order, ref, deadline) in list(self.inflight.items()):
            if deadline < now:
                self.inflight.pop(coid, None)
                with contextlib.suppress(Exception):
                    ray.cancel(ref)  # still queued at the gateway: it never runs
                self.gateways.pop(order.venue, None)
                self.unanswered[coid] = order
                if len(self.unanswered) > MAX_UNANSWERED:
                    del self.unanswered[next(iter(self.unanswered))]
                self._spawn(self._not_taken(order, f"no answer within {GATEWAY_TIMEOUT_S:g}s"))

    async def _not_taken(self, order: Order, why: str) -> None:
        """The gateway did not take the order (refused it, died, or never answered): release it unless it was
        journaled (then the gateway reports on it), audit it, and tell the strategy."""
        coid = order.client_order_id
        detail = f"gateway:{order.venue} did not accept {coid}: {why}"
        self.releasing.add(coid)
        try:
            released = await self._release_if_never_journaled(coid)
        finally:
            self.releasing.discard(coid)
        log.error("risk: %s (reservation %s)", detail, "released" if released else "kept: the gateway journaled it")
        self.service.gateway_refused(order, detail, released)
        self.wake.set()
        if coid in self.answered_late:  # taken while the journal was read: now that the release is done
            self.answered_late.discard(coid)
            self._spawn(self._taken_late(order))
        if released:
            self._tell_strategy(ExecutionReport(
                client_order_id=order.client_order_id, strategy=order.strategy, venue=order.venue,
                symbol=order.symbol, status=OrderStatus.REJECTED, side=order.side, order_qty=order.qty,
                price=order.price, reason=f"gateway_unavailable: {detail}", ts_ns=time.time_ns()))

    async def _taken_late(self, order: Order) -> None:
        """The gateway took an order after risk had given up on it. Where its reservation was kept (the journal
        had it), nothing changes. Where it was released, the strategy was told the order was rejected: the order
        is live all the same, so its limits are reserved again (as the gateway journaled it, fills so far
        counted) and it is canceled, since no strategy works it; fills until then count as any other."""
        coid = order.client_order_id
        if coid in self.releasing:  # `_not_taken` is deciding: it calls this again when it has
            self.answered_late.add(coid)
            return
        eng = self.service.engine
        if coid in eng.reservations:
            return
        try:
            journaled = await asyncio.to_thread(self.service.store.load_order, coid)
        except redis.RedisError:
            journaled = None
        live = journaled or order
        if coid in eng.reservations or live.status.is_terminal:
            return
        eng.reserve_open(live)
        log.warning("risk: gateway:%s took %s after %gs without an answer: reserved again (%g open) and canceled",
                    order.venue, coid, GATEWAY_TIMEOUT_S, live.remaining)
        self.service.gateway_took_late(live)
        self.wake.set()
        await self._cancel_one(order.venue, coid)

    async def _release_if_never_journaled(self, coid: str) -> bool:
        """A gateway that journaled the order will report on it; one that did not never will."""
        try:
            journaled = await asyncio.to_thread(self.service.store.load_order, coid)
        except redis.RedisError:
            log.error("risk: cannot tell if %s reached the gateway; keeping its reservation", coid)
            return False
        if journaled is None:
            self.service.engine.release(coid)
            return True
        return False

    def _tell_strategy(self, report: ExecutionReport) -> None:
        try:
            h = self.strategies.get(report.strategy)
            if h is None:
                h = self.strategies[report.strategy] = ray.get_actor(f"strategy:{report.strategy}")
            h.on_report.remote(report)
        except Exception:  # no such strategy actor (manual orders, tools)
            self.strategies.pop(report.strategy, None)

    async def _after_accepted(self, coids: list[str]) -> None:
        """Wait until the gateway has answered for these orders (or they expired): cancels come after."""
        deadline = time.monotonic() + GATEWAY_TIMEOUT_S + 2 * KILL_POLL_S
        while any(c in self.inflight for c in coids) and time.monotonic() < deadline:
            await asyncio.sleep(0.005)

    async def _forward_cancel(self, intent: OrderIntent) -> None:
        coid = intent.target_client_order_id or ""
        await self._after_accepted([coid])
        if not await self._cancel_one(intent.venue, coid):
            self.service.write(("event", "cancel_failed", json.dumps({
                "client_order_id": coid, "strategy": intent.strategy, "venue": intent.venue}).encode()))
            self.wake.set()

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

    # -- reports and marks -----------------------------------------------------------------------------------
    async def on_report(self, report: ExecutionReport) -> None:
        self.service.engine.on_report(report)
        if self.unanswered:
            given_up = self.unanswered.pop(report.client_order_id, None)
            if given_up is not None and not report.status.is_terminal:
                # The gateway took an order risk gave up on (its answer came too late, and a late answer to a
                # call risk cancelled reads as cancelled whatever it was): the report says the order is live.
                self._spawn(self._taken_late(given_up))
        if report.fill is not None:
            self._after_evaluate(self.service.evaluate())

    async def on_marks(self, marks: list[MarkPrice]) -> None:
        eng = self.service.engine
        for m in marks:
            eng.set_mark(m.symbol, m.mid, m.ts_ns)
        now = time.monotonic()
        if now - self.last_marks_flush > 1.0:
            self.last_marks_flush = now
            self.service.pending_marks.update({s: v[0] for s, v in eng.marks.items()})
            self.wake.set()
        self._after_evaluate(self.service.evaluate())

    def _after_evaluate(self, events: RiskEvents | None) -> None:
        if events is None:
            return
        self.wake.set()  # trips and equity to write
        if not (events.trips or events.exits):
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

    # -- controls ------------------------------------------------------------------------------------------------
    async def set_kill_switch(self, scope: str, on: bool) -> None:
        await asyncio.to_thread(self.service.store.set_kill_switch, scope, on)
        await self._read_controls()

    def _listen_controls(self, redis_url: str, cluster: str) -> None:
        """(thread) Wake the control watch whenever `risk:controls` announces a change."""
        store = StateStore.from_url(redis_url, cluster, timeout_s=5.0)
        while not self.stopping.is_set():
            try:
                ps = store.controls_pubsub()
                self.loop.call_soon_threadsafe(self.controls_changed.set)  # anything missed while away
                while not self.stopping.is_set():
                    if ps.get_message(timeout=1.0) is not None:
                        self.loop.call_soon_threadsafe(self.controls_changed.set)
            except Exception as exc:  # Redis away: the poll keeps failing closed; try again
                log.debug("risk: controls subscription lost: %s", exc)
                time.sleep(0.5)

    async def _watch_kill_switches(self) -> None:
        """Read kill switches, trading states and limit overrides when told of a change, and every KILL_POLL_S;
        evaluate breakers even without marks."""
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.controls_changed.wait(), KILL_POLL_S)
            self.controls_changed.clear()
            self._expire_inflight()
            try:
                await self._read_controls()
                self._after_evaluate(self.service.evaluate())
                eng = self.service.engine
                svc = self.service
                self.metrics.state(eng.kill_switches, len(eng.reservations), {s: v[0] for s, v in eng.marks.items()},
                                   pending_writes=len(svc.pending), dropped_writes=svc.dropped_writes)
            except redis.RedisError as exc:
                log.warning("risk: cannot read risk controls: %s", exc)
            except Exception:
                log.exception("risk: control watch failed")

    async def _read_controls(self) -> None:
        """Read the controls off the event loop; switching a kill switch on (or a scope to halted) also cancels
        the resting orders it covers."""
        store = self.service.store
        try:
            (kill, states), overrides = await asyncio.to_thread(lambda: (store.risk_controls(), store.limit_overrides()))
        except redis.RedisError as exc:
            self.service.read_error = f"{type(exc).__name__}: {exc}"
            raise
        newly = self.service.apply_controls(kill, states)
        if self.service.apply_overrides(overrides):
            log.warning("risk: limit overrides applied: %s", self.service.overrides)
        for scope in newly:
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

    async def _cancel_one(self, venue: str, coid: str) -> bool:
        await self._after_accepted([coid])
        try:
            return bool(await asyncio.wait_for(self._gateway(venue).cancel.remote(coid), GATEWAY_TIMEOUT_S))
        except Exception as exc:
            self.gateways.pop(venue, None)
            log.error("risk: cancel of %s on %s failed: %s", coid, venue, type(exc).__name__)
            return False

    async def _cancel_all(self, venue: str, strategy: str | None) -> None:
        eng = self.service.engine
        await self._after_accepted([c for c in list(self.inflight) if (r := eng.reservations.get(c)) is not None
                                    and r.venue == venue and (strategy is None or r.strategy == strategy)])
        try:
            await asyncio.wait_for(self._gateway(venue).cancel_all.remote(strategy), GATEWAY_TIMEOUT_S)
        except Exception as exc:
            self.gateways.pop(venue, None)
            log.error("risk: cancel-all on %s failed: %s", venue, type(exc).__name__)

    # -- the write-behind writer ---------------------------------------------------------------------------------
    async def _flush_loop(self) -> None:
        """One writer: whatever was queued since the last write goes in one pipeline, in order, off the loop."""
        svc = self.service
        while True:
            await self.wake.wait()
            await asyncio.sleep(FLUSH_COALESCE_S)  # let a burst of decisions join the batch
            self.wake.clear()
            if not await self._write_pending():
                await asyncio.sleep(RETRY_S)
                self.wake.set()
                continue
            if len(svc.coids) < COID_LOW:  # top up client order ids before they run out
                try:
                    fresh = await asyncio.to_thread(svc.store.next_client_order_ids, COID_BATCH)
                    svc.coids = fresh[::-1] + svc.coids  # on the loop: no decision takes an id meanwhile
                except redis.RedisError as exc:
                    svc.read_error = f"{type(exc).__name__}: {exc}"

    async def _write_pending(self) -> bool:
        svc = self.service
        async with self.write_lock:
            batch, marks, values = svc.take_pending()
            if not (batch or marks or values):
                return True
            try:
                await asyncio.to_thread(svc.write_batch, batch, marks, values)
            except Exception as exc:
                svc.batch_failed(batch, marks, values, exc)
                log.error("risk: redis write failed (%d entries kept, in order): %s", len(svc.pending), exc)
                return False
            svc.batch_written(batch)
            return True

    async def flush(self, timeout_s: float = 0.0) -> int:
        """Write everything queued now (shutdown, tests); returns how many entries are still waiting.

        With `timeout_s`, a failed write is retried every RETRY_S until the queue is empty or the time is up:
        at shutdown the audit of the last decisions survives a short Redis outage."""
        deadline = time.monotonic() + timeout_s
        while True:
            written = await self._write_pending()
            svc = self.service
            if written and not (svc.pending or svc.pending_marks or svc.pending_values):
                return 0
            if time.monotonic() + RETRY_S > deadline:
                return len(svc.pending)
            await asyncio.sleep(0 if written else RETRY_S)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def status(self) -> dict[str, Any]:
        return {**self.service.snapshot(), "inflight": len(self.inflight)}
