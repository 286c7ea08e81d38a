"""`python -m cluster order | cancel-all | flatten` against a running paper cluster (real Ray, real Redis).

A small cluster with no strategies, so every order in Redis is the CLI's: orders pass the risk actor
(strategy `manual`), appear in Redis, `cancel-all` cancels the resting one, `flatten` brings the
position back to zero.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import ray
import yaml

from cluster.cli import build_parser
from cluster.cli import main as cli_main
from cluster.commands.order import MANUAL_STRATEGY, build_intent, whole_lots
from cluster.config import parse_config
from cluster.launch import ClusterRun
from cluster.messages import OrderStatus, OrderType
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration


def cli_config(tmp_path: Path, redis_url: str):
    data = yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())
    data["cluster"] = {"name": "cliorders", "data_dir": str(tmp_path / "runs")}
    data["redis"] = {"url": redis_url}
    data["market"]["source"] = "builtin"
    data["api"] = {"enabled": False}
    data["symbols"] = [s for s in data["symbols"] if s["symbol"] in ("BTCUSDT", "ETHUSDT")]
    data["strategies"] = []
    data["risk"].pop("strategies", None)
    path = tmp_path / "cli.yaml"
    path.write_text(yaml.safe_dump(data))
    return parse_config(data), str(path)



def net(store, symbol: str) -> float:
    return sum(p.qty for p in store.positions() if p.symbol == symbol)


def test_order_cancel_all_and_flatten_through_risk(ray_session, redis_url, tmp_path, capsys) -> None:
    cfg, path = cli_config(tmp_path, redis_url)
    run = ClusterRun(cfg)
    run.start()
    try:
        store = run.store
        assert store is not None
        wait_for(lambda: "BTCUSDT" in store.marks(), 20, "risk to have a reference price")
        mid = store.marks()["BTCUSDT"]

        # A resting limit order: approved by risk, journaled, open in Redis under strategy `manual`.
        price = round(mid * 0.98, 1)
        rc = cli_main(["order", "--venue", "paper", "--symbol", "BTCUSDT", "--side", "buy", "--qty", "0.01",
                       "--price", str(price), "--wait", "1", "--config", path])
        out = capsys.readouterr().out
        assert rc == 0, out
        assert ": new" in out and "BTCUSDT buy 0.01 limit" in out
        resting = store.open_orders("paper")
        assert len(resting) == 1 and resting[0].strategy == MANUAL_STRATEGY and resting[0].price == price
        coid = resting[0].client_order_id
        assert coid in out

        # A market order: through risk (a limit IOC at the protection price), filled, a position in Redis.
        rc = cli_main(["order", "--venue", "paper", "--symbol", "BTCUSDT", "--side", "buy", "--qty", "0.02",
                       "--config", path])
        out = capsys.readouterr().out
        assert rc == 0, out
        assert ": filled" in out
        assert net(store, "BTCUSDT") == pytest.approx(0.02)

        # A notional market order: 100 USDT's worth, its quantity estimated by risk from the mid, filled.
        rc = cli_main(["order", "--venue", "paper", "--symbol", "BTCUSDT", "--side", "buy", "--notional", "100",
                       "--config", path])
        out = capsys.readouterr().out
        assert rc == 0, out
        assert "BTCUSDT buy notional 100 (est. qty" in out and ": filled" in out
        bought = net(store, "BTCUSDT") - 0.02
        assert bought * store.marks()["BTCUSDT"] == pytest.approx(100.0, rel=0.05)
        notional_orders = [o for o in (store.load_order(c) for c in _coids(out)) if o is not None]
        assert [o.notional for o in notional_orders] == [100.0]

        # Risk refuses what it must refuse, and the CLI says so (no order reaches the gateway).
        rc = cli_main(["order", "--venue", "paper", "--symbol", "BTCUSDT", "--side", "buy", "--qty", "0.01",
                       "--price", str(round(mid * 0.5, 1)), "--wait", "1", "--config", path])
        out = capsys.readouterr().out
        assert rc == 1 and "rejected by risk: price_collar" in out
        assert len(store.open_orders("paper")) == 1

        # cancel-all cancels the resting order.
        assert cli_main(["cancel-all", "--venue", "paper", "--config", path]) == 0
        assert "paper: cancel requested for 1 order(s)" in capsys.readouterr().out
        wait_for(lambda: store.open_orders("paper") == [], 30, "the resting order to be canceled")
        assert store.load_order(coid).status is OrderStatus.CANCELED

        # flatten sells the position back to zero, through risk, in whole lots (the notional order bought off the
        # lot grid: less than a lot stays).
        lot = cfg.symbol_map["BTCUSDT"].lot_size
        whole = whole_lots(0.02 + bought, lot)
        assert 0.02 + bought - lot < whole <= 0.02 + bought
        assert cli_main(["flatten", "--config", path]) == 0
        out = capsys.readouterr().out
        assert f"BTCUSDT sell {whole:g}" in out and ": filled" in out
        wait_for(lambda: net(store, "BTCUSDT") == pytest.approx(0.02 + bought - whole), 30, "a flat position")
        manual_fills = [f for f in store.journal_fills() if f.strategy == MANUAL_STRATEGY]
        assert sum(f.qty for f in manual_fills if f.side.value == "buy") == pytest.approx(0.02 + bought)
        assert sum(f.qty for f in manual_fills if f.side.value == "sell") == pytest.approx(whole)
        assert cli_main(["flatten", "--config", path]) == 0
        out = capsys.readouterr().out
        assert "nothing to flatten" in out and "less than one lot" in out
        assert "gateway:paper" in ray.util.list_named_actors()
    finally:
        run.shutdown()


def _coids(out: str) -> list[str]:
    """Client order ids printed by `order` (the first word of its result line)."""
    return [line.split()[0] for line in out.splitlines() if ": filled" in line]


def test_notional_flag_builds_a_market_intent_and_is_validated(tmp_path, capsys) -> None:
    cfg, path = cli_config(tmp_path, "redis://127.0.0.1:1/0")  # refused before anything connects
    base = ["order", "--venue", "paper", "--symbol", "BTCUSDT", "--side", "buy", "--config", path]
    intent = build_intent(build_parser().parse_args([*base, "--notional", "250.5"]), cfg)
    assert (intent.notional, intent.qty, intent.order_type, intent.price) == (250.5, 0.0, OrderType.MARKET, None)

    for bad in ("0", "-5", "nan", "inf"):
        assert cli_main([*base, "--notional", bad]) == 2
        err = capsys.readouterr().err
        assert "--notional must be a positive finite amount" in err and bad in err, err
    assert cli_main([*base, "--notional", "100", "--price", "50"]) == 2
    assert "--notional is for market orders only" in capsys.readouterr().err
    assert cli_main([*base, "--notional", "100", "--type", "limit"]) == 2
    assert "--notional is for market orders only" in capsys.readouterr().err
    assert cli_main([*base, "--qty", "nan"]) == 2
    assert "--qty must be a positive finite number" in capsys.readouterr().err

    for args in ([*base, "--qty", "1", "--notional", "100"], base):  # one of the two, never both
        with pytest.raises(SystemExit) as exc:
            cli_main(args)
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert "--notional" in err and "--qty" in err, err


def test_whole_lots_rounds_down_to_the_lot_grid() -> None:
    assert whole_lots(0.02, 0.0001) == 0.02
    assert whole_lots(0.0201 * 3, 0.0001) == pytest.approx(0.0603)  # float noise is not a lot short
    assert whole_lots(0.02166666, 0.0001) == pytest.approx(0.0216)
    assert whole_lots(0.00005, 0.0001) == 0.0
    assert whole_lots(1.5, 0.0) == 1.5
