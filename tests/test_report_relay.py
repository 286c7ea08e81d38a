"""The gateway's relay of execution reports to strategies: a dead handle is dropped, a new actor
under the same name gets the recent reports again, and a replayed fill moves a position once."""

from __future__ import annotations

from actors.report_relay import StrategyReportRelay
from cluster.messages import ExecutionReport, Fill, OrderStatus, Side
from strategies.base import Strategy


def report(coid: str, status: OrderStatus, trade_id: str = "", qty: float = 1.0) -> ExecutionReport:
    fill = Fill(client_order_id=coid, trade_id=trade_id, strategy="s", venue="paper", symbol="X", side=Side.BUY,
                price=10.0, qty=qty) if trade_id else None
    return ExecutionReport(client_order_id=coid, strategy="s", venue="paper", symbol="X", side=Side.BUY,
                           status=status, order_qty=2.0, filled_qty=qty if fill else 0.0,
                           fill=fill)


class Harness:
    def __init__(self):
        self.registry: dict[str, object] = {}
        self.sent: list[tuple[object, ExecutionReport]] = []
        self.now = 0.0

        def lookup(name):
            return self.registry[name]

        def send(handle, r):
            self.sent.append((handle, r))
            return handle

        self.relay = StrategyReportRelay(lookup, send, window_s=10.0, clock=lambda: self.now)


def test_reports_wait_for_a_strategy_that_is_not_there_yet_then_replay():
    h = Harness()
    h.relay.deliver(report("a", OrderStatus.NEW))
    assert h.sent == []
    h.registry["s"] = "actor1"
    h.relay.deliver(report("a", OrderStatus.PARTIALLY_FILLED, "t1"))
    assert [(a, r.status) for a, r in h.sent] == [("actor1", OrderStatus.NEW), ("actor1", OrderStatus.PARTIALLY_FILLED)]


def test_a_dead_handle_is_dropped_and_the_new_actor_gets_the_window_again():
    h = Harness()
    h.registry["s"] = "old"
    h.relay.deliver(report("a", OrderStatus.NEW))
    h.relay.deliver(report("a", OrderStatus.PARTIALLY_FILLED, "t1"))
    assert h.relay.last_call["s"] == "old"
    h.relay.forget("s")
    h.registry["s"] = "new"
    h.now = 5.0
    h.relay.deliver(report("a", OrderStatus.FILLED, "t2"))
    assert [r.status for a, r in h.sent if a == "new"] == [OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED,
                                                           OrderStatus.FILLED]


def test_the_window_forgets_old_reports_and_attach_replays_what_is_left():
    h = Harness()
    h.registry["s"] = "old"
    h.relay.deliver(report("a", OrderStatus.NEW))
    h.now = 11.0
    h.relay.deliver(report("b", OrderStatus.NEW))
    h.relay.attach("s", "new")
    assert [r.client_order_id for a, r in h.sent if a == "new"] == ["b"]


def test_a_replayed_fill_moves_the_strategy_position_once():
    st = Strategy("s", ["X"], {"X": "paper"})
    st.seen_fills.add("paper:t0")  # restored from Redis: already in the position
    st.positions["X"] = 1.0
    for r in (report("a", OrderStatus.PARTIALLY_FILLED, "t0"), report("a", OrderStatus.PARTIALLY_FILLED, "t1"),
              report("a", OrderStatus.PARTIALLY_FILLED, "t1")):
        st.handle_report(r)
    assert st.positions["X"] == 2.0
