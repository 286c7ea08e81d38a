"""`strategy:<name>`: a generic host for any `strategies.base.Strategy`.

Pinned to the node of the feed it reads. It turns market deliveries into
intents and sends every intent to the risk actor; if risk cannot answer in
time the intent is dropped (fail closed) and counted, nothing else is tried.
"""

from __future__ import annotations

import asyncio
import logging
import time
import warnings
from typing import Any

import msgspec
import ray

from cluster.conflation import SubscriberChannel
from cluster.messages import (
    BookUpdate,
    ExecutionReport,
    Order,
    OrderIntent,
    Position,
    RejectReason,
    RiskDecision,
    Trade,
)
from cluster.state_store import StateStore
from dashboards.metrics import StrategyMetrics
from strategies import create_strategy

log = logging.getLogger(__name__)

RISK_TIMEOUT_S = 2.0


class StrategyHost:
    """Plain logic of the strategy actor: counting, decisions and reports fed back to the strategy."""

    def __init__(self, type_name: str, name: str, symbols: list[str], venues: dict[str, str], params: dict[str, Any]):
        self.strategy = create_strategy(type_name, name, symbols, venues, params)
        self.counters: dict[str, int] = {"books": 0, "trades": 0, "skipped": 0, "intents": 0, "approved": 0,
                                         "rejected": 0, "reports": 0}
        self.rejected_by_reason: dict[str, int] = {}

    def restore(self, positions: list[Position], open_orders: list[Order], seen_fills: set[str] | None = None) -> None:
        """A restarted strategy actor picks up its positions and working orders from Redis.

        `seen_fills` are the fills those positions already count: the gateway replays recent
        reports to a new strategy actor, and those fills must not move the position again.
        """
        st = self.strategy
        st.seen_fills |= set(seen_fills or ())
        for p in positions:
            if p.strategy == st.name and p.symbol in st.positions:
                st.positions[p.symbol] += p.qty
        for o in open_orders:
            if o.strategy == st.name and o.symbol in st.venues:
                st.working[o.client_order_id] = OrderIntent(strategy=o.strategy, venue=o.venue, symbol=o.symbol,
                                                            side=o.side, qty=o.remaining, order_type=o.order_type,
                                                            price=o.price, tif=o.tif)

    def on_market(self, books: list[BookUpdate], trades: list[Trade], skipped: int) -> list[OrderIntent]:
        self.counters["skipped"] += skipped
        intents: list[OrderIntent] = []
        for t in trades:
            self.counters["trades"] += 1
            intents.extend(self.strategy.on_trade(t))
        for b in books:
            self.counters["books"] += 1
            intents.extend(_triggered_by(i, b.receive_ts_ns) for i in self.strategy.handle_book(b))
        return intents

    def on_decision(self, decision: RiskDecision, intent: OrderIntent) -> None:
        self.strategy.handle_decision(decision, intent)
        if decision.approved:
            self.counters["approved"] += 1
        else:
            self.counters["rejected"] += 1
            self.rejected_by_reason[decision.reason.value] = self.rejected_by_reason.get(decision.reason.value, 0) + 1

    def unavailable(self, intent: OrderIntent, detail: str) -> RiskDecision:
        return RiskDecision(approved=False, reason=RejectReason.RISK_UNAVAILABLE, strategy=intent.strategy,
                            venue=intent.venue, symbol=intent.symbol, action=intent.action, detail=detail,
                            ts_ns=time.time_ns())


def _was_restarted() -> bool:
    """This actor is Ray's restart of a crashed one (Ray 2.60's property warns about its own internals)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return bool(ray.get_runtime_context().was_current_actor_reconstructed)


def _triggered_by(intent: OrderIntent, ts_ns: int) -> OrderIntent:
    if intent.trigger_ts_ns or not ts_ns:
        return intent
    return msgspec.structs.replace(intent, trigger_ts_ns=ts_ns)


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class StrategyActor:
    def __init__(self, type_name: str, name: str, symbols: list[str], venues: dict[str, str], params: dict[str, Any],
                 risk_name: str = "risk", timer_interval_ms: float = 0.0, redis_url: str = "", cluster: str = "",
                 lot_sizes: dict[str, float] | None = None):
        self.name = name
        self.host = StrategyHost(type_name, name, symbols, venues, params)
        self.host.strategy.set_instruments(lot_sizes or {})  # the lots risk checks orders against
        if redis_url:
            positions, open_orders, seen = StateStore.from_url(redis_url, cluster).trading_snapshot()
            self.host.restore(positions, open_orders, seen)
        self.risk_name = risk_name
        self.risk: Any = None
        self.lock = asyncio.Lock()
        self.timer_interval_s = timer_interval_ms / 1000.0
        self.timer_task: asyncio.Task | None = None
        self.active = True
        self.metrics = StrategyMetrics(name)
        # Deliveries from a feed's compiled graph land here (conflated) and are drained on the event loop.
        self.loop = asyncio.get_event_loop()
        self.mailbox = SubscriberChannel(name=f"strategy:{name}")
        self.drain_task: asyncio.Task | None = None
        if _was_restarted():
            # Restarted by Ray after a crash: nobody calls start_timer again, so start it here.
            self.loop.call_soon(lambda: self.loop.create_task(self.start_timer()))

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()

    async def on_market(self, books: list[Any], trades: list[Trade], skipped: int) -> None:
        self.metrics.on_market(books, skipped)
        async with self.lock:
            if not self.active:
                return
            await self._submit(self.host.on_market(books, trades, skipped))

    def on_market_channel(self, payload: dict[str, tuple[list[BookUpdate], list[Trade], int]]) -> int:
        """A feed's compiled graph calls this on the graph's own thread: hand our part to the event loop, return.

        Returning at once keeps the feed's execution short whatever this strategy is busy with.
        """
        mine = payload.get(self.mailbox.name)
        if mine is not None:
            self.loop.call_soon_threadsafe(self._offer, *mine)
        return 0

    def _offer(self, books: list[BookUpdate], trades: list[Trade], skipped: int) -> None:
        box = self.mailbox
        box.skipped += skipped
        for b in books:
            box.offer_book(b)
        for t in trades:
            box.offer_trade(t)
        if self.drain_task is None or self.drain_task.done():
            self.drain_task = self.loop.create_task(self._drain())

    async def _drain(self) -> None:
        """Handle the mailbox until it is empty: a slow strategy gets the latest book and the count it skipped."""
        box = self.mailbox
        while box.has_pending:
            d = box.take()
            try:
                await self.on_market(d.books, d.trades, d.skipped)
            except Exception:  # a strategy fault must not stop later deliveries
                log.exception("strategy:%s: on_market failed", self.name)

    async def on_report(self, report: ExecutionReport) -> None:
        async with self.lock:
            self.host.counters["reports"] += 1
            intents = self.host.strategy.handle_report(report)
            if self.active:
                await self._submit(intents)

    async def start_timer(self) -> None:
        if self.timer_interval_s > 0 and self.timer_task is None:
            self.timer_task = asyncio.get_running_loop().create_task(self._timer())

    async def _timer(self) -> None:
        while True:
            await asyncio.sleep(self.timer_interval_s)
            async with self.lock:
                if self.active:
                    await self._submit(self.host.strategy.on_timer(time.time_ns()))

    async def _submit(self, intents: list[OrderIntent]) -> None:
        """Ask risk about all of one update's intents in one call: one round trip, not one per intent.

        Risk decides them in this order (a cancel before the order replacing it) and answers in it.
        """
        if not intents:
            return
        self.host.counters["intents"] += len(intents)
        asked = time.time_ns()
        decisions = await self._ask_risk(intents)
        for intent, decision in zip(intents, decisions, strict=True):
            self.metrics.on_decision(intent, decision, asked)
            self.host.on_decision(decision, intent)

    async def _ask_risk(self, intents: list[OrderIntent]) -> list[RiskDecision]:
        try:
            if self.risk is None:
                self.risk = ray.get_actor(self.risk_name)
            decisions = await asyncio.wait_for(self.risk.submit_batch.remote(intents), RISK_TIMEOUT_S)
            if len(decisions) != len(intents):
                raise RuntimeError(f"risk answered {len(decisions)} of {len(intents)} intents")
            return decisions
        except Exception as exc:  # fail closed: no answer from risk means nothing is sent
            self.risk = None
            return [self.host.unavailable(i, f"risk did not answer: {type(exc).__name__}") for i in intents]

    def set_params(self, params: dict[str, Any]) -> dict[str, Any]:
        self.host.strategy.set_params(params)
        return dict(self.host.strategy.params)

    async def stop(self) -> dict[str, Any]:
        async with self.lock:
            self.active = False
        if self.timer_task is not None:
            self.timer_task.cancel()
        return self.stats()

    def stats(self) -> dict[str, Any]:
        return {"counters": dict(self.host.counters), "rejected": dict(self.host.rejected_by_reason),
                "positions": dict(self.host.strategy.positions)}
