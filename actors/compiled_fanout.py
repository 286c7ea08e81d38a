"""Book deliveries from one feed actor to its pinned strategies over a Ray Compiled Graph.

Measured on a 2-core machine (`bench/transport_bench.py`): a Compiled Graph hop costs ~0.3 ms
where an actor call costs ~2 ms and `ray.put` plus a call ~5 ms. The graph's channels are mutable
objects in Ray's object store (shared memory on the node), so the books still travel through the
object store; what the graph saves is Ray's per-call task machinery.

Compiled Graphs have limits that shape this class:
- only the process that compiled a graph may execute it: each feed actor compiles its own;
- an actor takes part in one graph at a time: only strategies that read this feed actor alone
  join (the launcher says which); the others keep getting actor-call deliveries;
- a member that dies breaks the graph: it is torn down, the members fall back to actor calls,
  and the graph is compiled again after a back-off (or when the launcher re-subscribes a moved
  strategy).

The members' method (`StrategyActor.on_market_channel`) runs on the graph's own thread and only
hands the payload to the actor's event loop, so an execution returns in well under a millisecond
whatever the strategy is doing; the strategy conflates on its side.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import ray

log = logging.getLogger(__name__)

EXECUTE_TIMEOUT_S = 2.0
RETRY_AFTER_S = 5.0
TEARDOWN_WAIT_S = 5.0


class CompiledFanout:
    """The graph `payload -> [member.on_market_channel(payload) for each member]`, rebuilt when members change."""

    def __init__(self, owner: str, timeout_s: float = EXECUTE_TIMEOUT_S) -> None:
        # The feed waits on each execution from its event loop on purpose (a fraction of a millisecond,
        # bounded by `timeout_s`): Ray's one-time warning about blocking gets would only alarm users.
        os.environ.setdefault("RAY_WARN_BLOCKING_GET_INSIDE_ASYNC", "0")
        # Ray logs every graph teardown at INFO; a member restart is reported here at WARNING instead.
        logging.getLogger("ray.dag.compiled_dag_node").setLevel(logging.WARNING)
        self.owner = owner
        self.timeout_s = timeout_s
        self.members: dict[str, Any] = {}  # channel name -> actor handle
        self.graph: Any = None
        self.dirty = False
        self.retry_at = 0.0
        self.failures = 0
        self.last_error = ""

    def set_member(self, name: str, handle: Any) -> None:
        if self.members.get(name) is not handle:
            self.members[name] = handle
            self.dirty = True

    def discard(self, name: str) -> None:
        if self.members.pop(name, None) is not None:
            self.dirty = True

    @property
    def active(self) -> bool:
        """A compiled graph is ready: members get their deliveries through it."""
        return self.graph is not None

    def ensure(self) -> bool:
        """Compile the graph if the members changed, or retry after a failure; True when it is usable."""
        if not self.members:
            return False
        if self.graph is not None and not self.dirty:
            return True
        if self.graph is None and not self.dirty and time.monotonic() < self.retry_at:
            return False
        self._teardown()
        from ray.dag import InputNode, MultiOutputNode

        try:
            with InputNode() as inp:
                dag = MultiOutputNode([h.on_market_channel.bind(inp) for h in self.members.values()])
            self.graph = dag.experimental_compile()
            self.dirty = False
            log.info("%s: compiled graph to %s", self.owner, sorted(self.members))
            return True
        except Exception as exc:  # a member not ready, or a Ray build without compiled graphs
            self._failed(f"compile: {type(exc).__name__}: {exc}")
            return False

    def send(self, payload: dict[str, Any]) -> bool:
        """Write one payload to every member and wait for their acknowledgements; False (graph dropped) on failure."""
        if self.graph is None:
            return False
        try:
            ray.get(self.graph.execute(payload), timeout=self.timeout_s)
            return True
        except Exception as exc:  # a member died or hung: the graph is unusable from here on
            self._failed(f"execute: {type(exc).__name__}: {exc}")
            self._teardown()
            return False

    def close(self) -> None:
        self._teardown()

    def _failed(self, why: str) -> None:
        self.failures += 1
        self.last_error = why
        self.dirty = False
        self.retry_at = time.monotonic() + RETRY_AFTER_S
        log.warning("%s: compiled graph unusable (%s); members get actor calls, retry in %.0fs",
                    self.owner, why[:300], RETRY_AFTER_S)

    def _teardown(self) -> None:
        graph, self.graph = self.graph, None
        if graph is None:
            return
        # Tearing down a graph with a dead member can block; never let it stall the feed for long.
        t = threading.Thread(target=_quiet_teardown, args=(graph,), daemon=True, name="cgraph-teardown")
        t.start()
        t.join(TEARDOWN_WAIT_S)


def _quiet_teardown(graph: Any) -> None:
    try:
        graph.teardown()
    except Exception as exc:  # already broken: nothing more to release
        log.debug("compiled graph teardown: %s", exc)
