"""Structured logs: JSON lines that carry the actor name (\"driver\" outside an actor) and extra fields."""

from __future__ import annotations

import io
import json
import logging

from dashboards.logging_setup import setup_logging


def test_json_lines_carry_actor_and_extra_fields(monkeypatch) -> None:
    buf = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        setup_logging(json_format=True, stream=buf)
        logging.getLogger("actors.feed").warning("resync %s", "BTCUSDT", extra={"symbol": "BTCUSDT", "gap": 3})
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("x").exception("failed")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    first, second = (json.loads(line) for line in buf.getvalue().splitlines())
    assert first["msg"] == "resync BTCUSDT" and first["level"] == "warning" and first["logger"] == "actors.feed"
    assert first["actor"] == "driver" and first["symbol"] == "BTCUSDT" and first["gap"] == 3
    assert "ValueError: boom" in second["exc"]


def test_env_variable_switches_json_on(monkeypatch) -> None:
    buf = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    monkeypatch.setenv("RSC_LOG_JSON", "1")
    try:
        setup_logging(stream=buf)
        logging.getLogger("t").info("hello")
        monkeypatch.setenv("RSC_LOG_JSON", "0")
        setup_logging(stream=buf)
        logging.getLogger("t").info("plain")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    first, second = buf.getvalue().splitlines()
    assert json.loads(first)["msg"] == "hello"
    assert second.endswith("INFO [driver] t: plain")
