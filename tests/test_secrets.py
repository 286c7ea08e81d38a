"""API keys: from the environment or a secrets file; never in logs, Redis or the journal."""

from __future__ import annotations

import asyncio
import logging
import pickle

import pytest
import redis

from gateways.secrets import Credentials, SecretsError, load_credentials


def test_environment_wins_over_the_file(tmp_path) -> None:
    f = tmp_path / "keys.yaml"
    f.write_text("BINANCE_API_KEY: file-key\nBINANCE_API_SECRET: file-secret\n")
    c = load_credentials("binance", str(f), env={"BINANCE_API_KEY": "env-key"})
    assert (c.api_key, c.api_secret) == ("env-key", "file-secret")
    a = load_credentials("alpaca", env={"APCA_API_KEY_ID": "k", "APCA_API_SECRET_KEY": "s"})
    assert (a.api_key, a.api_secret) == ("k", "s")


def test_missing_keys_name_the_variables_not_values(tmp_path) -> None:
    with pytest.raises(SecretsError) as exc:
        load_credentials("alpaca", env={"APCA_API_KEY_ID": "present-value"})
    assert "APCA_API_SECRET_KEY" in str(exc.value) and "present-value" not in str(exc.value)
    with pytest.raises(SecretsError):
        load_credentials("binance", str(tmp_path / "missing.yaml"), env={})


def test_credentials_hide_themselves() -> None:
    c = Credentials("binance", "AKEY123", "SSECRET456")
    assert "AKEY123" not in repr(c) and "SSECRET456" not in str(c) and "SSECRET456" not in f"{c}"
    with pytest.raises(TypeError):
        pickle.dumps(c)


def test_keys_never_reach_logs_or_redis(redis_url: str, caplog, monkeypatch) -> None:
    """A full gateway session with faults against the simulator: no key or secret in any log record or Redis value."""
    from gateways.venue_sim import binance_trading as sim_mod
    from tests import test_binance_trading as bt

    key, secret = "AKIA-TEST-KEY-7f3a9c", "SECRET-TEST-VALUE-91b2e4d8"
    monkeypatch.setenv("BINANCE_API_KEY", key)
    monkeypatch.setenv("BINANCE_API_SECRET", secret)
    creds = load_credentials("binance")
    monkeypatch.setattr(bt, "CREDS", creds)

    async def go() -> None:
        async with bt.simulator() as (sim, url):
            sim.add_account(key, secret)
            service = bt.make_service(url, redis_url, timeout_s=0.3)
            service.restore()
            await service.start()
            bid = sim.exchange.markets["BTCUSDT"].book_levels()[0][0][0]
            sim.faults.drop_new_response, sim.faults.drop_hold_s = 1, 0.6
            for o in (bt.order(price=round(bid * 0.95, 1)), bt.order(qty=0.01, otype=bt.OrderType.MARKET),
                      bt.order(qty=90.0, price=round(bid * 0.9, 1))):
                service.accept(o)
                await service.send(o)
            await sim.disconnect_user_streams()
            await asyncio.sleep(1.0)
            await service.reconcile("test")
            await service.close()
        assert sim_mod.SIM_API_KEY not in creds.secrets()

    with caplog.at_level(logging.DEBUG):
        asyncio.run(go())
    text = "\n".join(r.getMessage() + str(r.args) for r in caplog.records)
    assert caplog.records, "the session logged something to search"
    r = redis.Redis.from_url(redis_url)
    dump = []
    for k in r.scan_iter("*"):
        t = r.type(k).decode()
        if t == "string":
            dump.append(r.get(k))
        elif t == "hash":
            dump += list(r.hgetall(k).values())
        elif t == "set":
            dump += list(r.smembers(k))
        elif t == "stream":
            dump += [v for _, f in r.xrange(k) for v in f.values()]
    blob = b"\n".join(dump).decode()
    assert "journal" in "".join(k.decode() for k in r.scan_iter("*"))
    for s in (key, secret):
        assert s not in text
        assert s not in blob
