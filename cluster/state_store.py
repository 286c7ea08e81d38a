"""The cluster's shared state in Redis, namespaced by cluster name.

Redis is the truth a restarted actor rebuilds from: orders (every one, with the
set of open ones), positions, the order journal (a Redis Stream of every order
event and fill), the risk audit stream, kill switches, run statistics.

Keys (prefix `rsc:<cluster>:`):
  orders        hash  client_order_id -> Order JSON (latest state)
  orders:open   hash  client_order_id -> Order JSON, for orders not yet terminal
  journal       stream  {kind: order|fill, venue, data: JSON}
  fills:seen    set   "<venue>:<trade_id>" of every recorded fill (dedupe)
  positions     hash  "<strategy>|<symbol>" -> Position JSON
  maxpos        hash  symbol -> max |net position| seen
  marks         hash  symbol -> last reference price
  kill          hash  scope -> "1" (global, venue:<v>, strategy:<s>)
  audit         stream  risk decisions, limit changes, trading state changes
  risk:state    hash  scope -> trading state JSON (reducing / halted, why, who)
  risk:limits   hash  limit overrides set while running: KEY -> JSON value
  risk:equity   hash  peak_equity, equity, drawdown_pct, day, day_start, scope_peaks (risk's loss breakers)
  risk:controls pub/sub channel: "kill" | "state" | "limits" after each change of those (the risk actor
                applies a change as soon as it hears of it, and polls them as well)
  stats         hash  counters (orders_submitted, rejected:<reason>, book_updates:<symbol>, ...)
  coid          counter for client order ids
  actors        hash  actor name -> JSON {node_id, pid, role}
"""

from __future__ import annotations

from collections.abc import Iterable

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from cluster.messages import Fill, Order, Position, RiskDecision, from_json, to_json

JOURNAL_MAXLEN = 1_000_000


class StateStore:
    def __init__(self, client: redis.Redis, cluster: str):
        self.r = client
        self.cluster = cluster
        self.prefix = f"rsc:{cluster}:"

    @classmethod
    def from_url(cls, url: str, cluster: str, timeout_s: float = 2.0) -> StateStore:
        # One quick retry, no backoff: on the trading path an unreachable Redis must fail fast (closed).
        client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                      health_check_interval=30, retry=Retry(NoBackoff(), 1))
        return cls(client, cluster)

    def key(self, name: str) -> str:
        return self.prefix + name

    def ping(self) -> bool:
        return bool(self.r.ping())

    # -- client order ids --------------------------------------------------------------------------
    def next_client_order_ids(self, n: int = 1) -> list[str]:
        """Unique across restarts: a Redis counter, never reused (Binance allows 36 chars of [A-Za-z0-9_-])."""
        last = int(self.r.incrby(self.key("coid"), n))
        return [f"{self.cluster[:16]}-{i:x}" for i in range(last - n + 1, last + 1)]

    # -- orders and fills ----------------------------------------------------------------------------
    def record_order(self, order: Order, event: str = "") -> None:
        data = to_json(order)
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self.key("orders"), order.client_order_id, data)
        if order.status.is_terminal:
            pipe.hdel(self.key("orders:open"), order.client_order_id)
        else:
            pipe.hset(self.key("orders:open"), order.client_order_id, data)
        pipe.xadd(self.key("journal"), {"kind": "order", "event": event or order.status.value, "venue": order.venue,
                                         "data": data}, maxlen=JOURNAL_MAXLEN, approximate=True)
        pipe.execute()

    def fill_seen(self, venue: str, trade_id: str) -> bool:
        return bool(self.r.sismember(self.key("fills:seen"), f"{venue}:{trade_id}"))

    def record_fill(self, order: Order, fill: Fill, position: Position, max_abs_net: float) -> bool:
        """Journal a fill with the order state and position it produced, all or nothing.

        Returns False (and writes nothing) if this venue trade id was already recorded.
        """
        seen_key = self.key("fills:seen")
        member = f"{fill.venue}:{fill.trade_id}"
        order_data = to_json(order)
        with self.r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(seen_key)
                    if pipe.sismember(seen_key, member):
                        pipe.unwatch()
                        return False
                    pipe.multi()
                    pipe.sadd(seen_key, member)
                    pipe.hset(self.key("orders"), order.client_order_id, order_data)
                    if order.status.is_terminal:
                        pipe.hdel(self.key("orders:open"), order.client_order_id)
                    else:
                        pipe.hset(self.key("orders:open"), order.client_order_id, order_data)
                    pipe.hset(self.key("positions"), f"{position.strategy}|{position.symbol}", to_json(position))
                    pipe.hset(self.key("maxpos"), fill.symbol, repr(max_abs_net))
                    pipe.hincrby(self.key("stats"), "fills", 1)
                    pipe.hincrby(self.key("stats"), f"fills:{fill.symbol}", 1)
                    pipe.xadd(self.key("journal"), {"kind": "fill", "event": "fill", "venue": fill.venue,
                                                     "data": to_json(fill)}, maxlen=JOURNAL_MAXLEN, approximate=True)
                    pipe.xadd(self.key("journal"), {"kind": "order", "event": order.status.value, "venue": order.venue,
                                                     "data": order_data}, maxlen=JOURNAL_MAXLEN, approximate=True)
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue

    def load_order(self, client_order_id: str) -> Order | None:
        raw = self.r.hget(self.key("orders"), client_order_id)
        return from_json(raw, Order) if raw else None  # type: ignore[return-value]

    def open_orders(self, venue: str | None = None) -> list[Order]:
        orders = [from_json(raw, Order) for raw in self.r.hvals(self.key("orders:open"))]
        orders.sort(key=lambda o: o.created_ts_ns)  # type: ignore[attr-defined]
        return [o for o in orders if venue is None or o.venue == venue]  # type: ignore[misc]

    def trading_snapshot(self) -> tuple[list[Position], list[Order], set[str]]:
        """Positions, open orders and recorded fill ids read in one transaction, so they agree."""
        pipe = self.r.pipeline(transaction=True)
        pipe.hvals(self.key("positions"))
        pipe.hvals(self.key("orders:open"))
        pipe.smembers(self.key("fills:seen"))
        pos_raw, open_raw, seen_raw = pipe.execute()
        return ([from_json(v, Position) for v in pos_raw], [from_json(v, Order) for v in open_raw],  # type: ignore[misc]
                {m.decode() for m in seen_raw})

    def journal(self, count: int | None = None) -> list[tuple[str, dict[str, str]]]:
        entries = self.r.xrange(self.key("journal"), count=count)
        return [(eid.decode(), {k.decode(): v.decode() for k, v in fields.items()}) for eid, fields in entries]

    def journal_fills(self) -> list[Fill]:
        return [from_json(f["data"], Fill) for _, f in self.journal() if f["kind"] == "fill"]  # type: ignore[misc]

    # -- positions ----------------------------------------------------------------------------------
    def positions(self) -> list[Position]:
        return [from_json(v, Position) for v in self.r.hvals(self.key("positions"))]  # type: ignore[misc]

    def max_abs_positions(self) -> dict[str, float]:
        return {k.decode(): float(v) for k, v in self.r.hgetall(self.key("maxpos")).items()}

    def set_marks(self, marks: dict[str, float]) -> None:
        if marks:
            self.r.hset(self.key("marks"), mapping={k: repr(v) for k, v in marks.items()})

    def marks(self) -> dict[str, float]:
        return {k.decode(): float(v) for k, v in self.r.hgetall(self.key("marks")).items()}

    # -- kill switch ----------------------------------------------------------------------------------
    def set_kill_switch(self, scope: str, on: bool) -> None:
        pipe = self.r.pipeline(transaction=True)
        if on:
            pipe.hset(self.key("kill"), scope, "1")
        else:
            pipe.hdel(self.key("kill"), scope)
        pipe.publish(self.key("risk:controls"), "kill")
        pipe.execute()

    def kill_switches(self) -> set[str]:
        return {k.decode() for k in self.r.hkeys(self.key("kill"))}

    # -- risk state (trading states, limit overrides, equity) ---------------------------------------------
    def risk_controls(self) -> tuple[set[str], dict[str, bytes]]:
        """Kill switches and trading states in one round trip (read by risk before every decision)."""
        pipe = self.r.pipeline(transaction=False)
        pipe.hkeys(self.key("kill"))
        pipe.hgetall(self.key("risk:state"))
        kill, states = pipe.execute()
        return {k.decode() for k in kill}, {k.decode(): v for k, v in states.items()}

    def set_trading_state(self, scope: str, status_json: bytes | None) -> None:
        """`risk:state` hash: scope -> TradingStatus JSON; None (active) removes the scope."""
        pipe = self.r.pipeline(transaction=True)
        if status_json is None:
            pipe.hdel(self.key("risk:state"), scope)
        else:
            pipe.hset(self.key("risk:state"), scope, status_json)
        pipe.publish(self.key("risk:controls"), "state")
        pipe.execute()

    def trading_states(self) -> dict[str, bytes]:
        return {k.decode(): v for k, v in self.r.hgetall(self.key("risk:state")).items()}

    def limit_overrides(self) -> dict[str, str]:
        """`risk:limits` hash: `limits set KEY VALUE` overrides, KEY -> JSON value."""
        return {k.decode(): v.decode() for k, v in self.r.hgetall(self.key("risk:limits")).items()}

    def set_limit_override(self, key: str, value_json: str | None) -> None:
        pipe = self.r.pipeline(transaction=True)
        if value_json is None:
            pipe.hdel(self.key("risk:limits"), key)
        else:
            pipe.hset(self.key("risk:limits"), key, value_json)
        pipe.publish(self.key("risk:controls"), "limits")
        pipe.execute()

    def controls_pubsub(self) -> redis.client.PubSub:
        """A subscription to `risk:controls` (on its own connection; the caller reads and closes it)."""
        ps = self.r.pubsub(ignore_subscribe_messages=True)
        ps.subscribe(self.key("risk:controls"))
        return ps

    def set_risk_values(self, values: dict[str, str]) -> None:
        """`risk:equity` hash: peak_equity, equity, drawdown_pct, day, day_start (JSON) as risk last saw them."""
        if values:
            self.r.hset(self.key("risk:equity"), mapping=values)

    def risk_values(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.r.hgetall(self.key("risk:equity")).items()}

    def audit_event(self, kind: str, data: bytes) -> None:
        """A non-decision entry in the audit stream (limit change, trading state change, reconciliation)."""
        self.r.xadd(self.key("audit"), {"kind": kind, "data": data}, maxlen=JOURNAL_MAXLEN, approximate=True)

    def audit_decisions_since(self, since_ms: int) -> list[RiskDecision]:
        """Decisions in the audit stream from `since_ms` (stream ids are milliseconds) on."""
        out = []
        for _, fields in self.r.xrange(self.key("audit"), min=f"{since_ms}-0"):
            if b"reason" in fields:
                out.append(from_json(fields[b"data"], RiskDecision))
        return out  # type: ignore[return-value]

    def audit_entries(self, count: int = 100) -> list[dict[str, str]]:
        """The latest audit entries, newest first."""
        return [{k.decode(): v.decode() for k, v in f.items()} for _, f in
                self.r.xrevrange(self.key("audit"), count=count)]

    def write_risk_batch(self, entries: Iterable[RiskDecision | tuple[str, str, bytes | None]],
                         marks: dict[str, float] | None = None, values: dict[str, str] | None = None) -> None:
        """The risk actor's write-behind: its queued entries in order, in one pipeline.

        An entry is a decision (audit + stats, as `audit_pipeline`), `("event", kind, data)` (an audit entry;
        kind `gateway_refused` also counts `rejected:gateway_unavailable`) or `("state", scope, status JSON or
        None)` (a trading state a breaker set, announced on `risk:controls`). Then the latest marks and
        `risk:equity` values, if given."""
        pipe = self.r.pipeline(transaction=False)
        for e in entries:
            if isinstance(e, RiskDecision):
                pipe.xadd(self.key("audit"), {"approved": int(e.approved), "reason": e.reason.value,
                                              "data": to_json(e)}, maxlen=JOURNAL_MAXLEN, approximate=True)
                if e.action.value == "new":
                    pipe.hincrby(self.key("stats"), "orders_submitted", 1)
                    if not e.approved:
                        pipe.hincrby(self.key("stats"), f"rejected:{e.reason.value}", 1)
            elif e[0] == "event":
                pipe.xadd(self.key("audit"), {"kind": e[1], "data": e[2] or b""}, maxlen=JOURNAL_MAXLEN,
                          approximate=True)
                if e[1] == "gateway_refused":
                    pipe.hincrby(self.key("stats"), "rejected:gateway_unavailable", 1)
            elif e[0] == "state":
                if e[2] is None:
                    pipe.hdel(self.key("risk:state"), e[1])
                else:
                    pipe.hset(self.key("risk:state"), e[1], e[2])
                pipe.publish(self.key("risk:controls"), "state")
            else:
                raise ValueError(f"unknown risk write {e[0]!r}")
        if marks:
            pipe.hset(self.key("marks"), mapping={k: repr(v) for k, v in marks.items()})
        if values:
            pipe.hset(self.key("risk:equity"), mapping=values)
        pipe.execute()

    def journal_orders_since(self, since_ms: int, event: str = "submit") -> list[Order]:
        """Orders journaled with `event` from `since_ms` (stream ids are milliseconds) on."""
        out = []
        for _, fields in self.r.xrange(self.key("journal"), min=f"{since_ms}-0"):
            if fields.get(b"kind") == b"order" and fields.get(b"event") == event.encode():
                out.append(from_json(fields[b"data"], Order))
        return out  # type: ignore[return-value]

    # -- audit and statistics -------------------------------------------------------------------------
    def audit_pipeline(self, decisions: Iterable[RiskDecision]) -> None:
        pipe = self.r.pipeline(transaction=False)
        for d in decisions:
            pipe.xadd(self.key("audit"), {"approved": int(d.approved), "reason": d.reason.value, "data": to_json(d)},
                      maxlen=JOURNAL_MAXLEN, approximate=True)
            if d.action.value == "new":
                pipe.hincrby(self.key("stats"), "orders_submitted", 1)
                if not d.approved:
                    pipe.hincrby(self.key("stats"), f"rejected:{d.reason.value}", 1)
        pipe.execute()

    def incr_stats(self, counters: dict[str, int]) -> None:
        if not counters:
            return
        pipe = self.r.pipeline(transaction=False)
        for k, v in counters.items():
            pipe.hincrby(self.key("stats"), k, v)
        pipe.execute()

    def stats(self) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in self.r.hgetall(self.key("stats")).items()}

    def register_actor(self, name: str, info: bytes) -> None:
        self.r.hset(self.key("actors"), name, info)

    def actors(self) -> dict[str, bytes]:
        return {k.decode(): v for k, v in self.r.hgetall(self.key("actors")).items()}

    def reset(self) -> None:
        """Delete this cluster's keys (a fresh paper run)."""
        keys = list(self.r.scan_iter(match=self.prefix + "*", count=1000))
        if keys:
            self.r.delete(*keys)

