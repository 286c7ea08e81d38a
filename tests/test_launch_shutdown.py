"""`ClusterRun.shutdown` writes the risk actor's write-behind queue to Redis before it kills the actors.

A real risk actor (and a stub gateway) in a ClusterRun with nothing else: decisions are made while Redis refuses
writes (an ACL), so their audit waits in risk's queue; shutdown starts; Redis takes writes again a second later.
Without the flush the actor is killed with the audit still queued; with it, shutdown waits (bounded) and the
audit of the last decisions is in Redis afterwards.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import pytest
import ray
import redis
import yaml

from actors.risk import RiskActor
from cluster.config import RiskLimits, RiskSection, SymbolSection, parse_config
from cluster.launch import RISK_FLUSH_TIMEOUT_S, ClusterRun
from cluster.messages import OrderIntent, Side, to_json
from cluster.state_store import StateStore
from tests.test_risk_actor import StubGateway, marks, wait_for

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration


def test_shutdown_flushes_the_audit_of_the_last_decisions_to_redis(ray_session, redis_url, tmp_path):
    venue, sym, cluster = "lsv1", "LSA", "lshut"
    data = yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())
    data["cluster"] = {"name": cluster, "data_dir": str(tmp_path / "runs")}
    data["redis"] = {"url": redis_url}
    run = ClusterRun(parse_config(data))
    section = RiskSection(defaults=RiskLimits(max_orders_per_min=1000), max_drawdown_pct=None, stop_loss_atr=None)
    syms = [SymbolSection(symbol=sym, venue=venue, price=100.0, lot_size=0.001, tick_size=0.01)]
    run.gateways[venue] = StubGateway.options(name=f"gateway:{venue}").remote([])
    run.risk = RiskActor.remote(section, syms, [venue], redis_url, cluster)
    store = StateStore.from_url(redis_url, cluster)
    admin = redis.Redis.from_url(redis_url)
    try:
        ray.get(run.risk.on_marks.remote(marks(venue, sym, 100.0)))
        wait_for(lambda: ray.get(run.risk.status.remote())["ready_venues"] == [venue])

        def ask(price: float):
            i = OrderIntent(strategy="ls", venue=venue, symbol=sym, side=Side.BUY, qty=1.0, price=price)
            return ray.get(run.risk.submit.remote(i), timeout=30)

        assert ask(99.9).approved  # client order ids in hand, Redis writable
        assert ray.get(run.risk.flush.remote()) == 0
        admin.execute_command("ACL", "SETUSER", "default", "-@write")  # Redis refuses risk's writes from now
        last = [ask(99.8 - k * 0.1) for k in range(5)]  # the last decisions before shutdown: audit queued
        assert ray.get(run.risk.status.remote())["pending_writes"] >= 5

        stopped = threading.Event()
        shutdown = threading.Thread(target=lambda: (run.shutdown(), stopped.set()), daemon=True)
        shutdown.start()
        stopped.wait(1.0)  # without the flush, shutdown has killed risk by now
        admin.execute_command("ACL", "SETUSER", "default", "+@all")  # Redis is back within the flush's timeout
        assert stopped.wait(RISK_FLUSH_TIMEOUT_S + 10), "shutdown did not finish"

        audited = [e["data"] for e in store.audit_entries(count=50)[::-1] if "data" in e]
        assert audited[-5:] == [to_json(d).decode() for d in last]  # all of them, in order
        assert store.stats()["orders_submitted"] == 6
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(run.risk.status.remote(), timeout=10)  # and then risk was stopped
    finally:
        admin.execute_command("ACL", "SETUSER", "default", "+@all")
        for h in (run.risk, *run.gateways.values()):
            with contextlib.suppress(Exception):
                ray.kill(h, no_restart=True)
