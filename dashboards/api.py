"""The status API: read-only HTTP views of the cluster, served from Redis on the head node.

GET /health, /status, /account, /positions, /orders, /trades, /metrics (JSON),
/metrics/prometheus (text format) and /openapi.json. Bound to localhost by
default; with a token configured every endpoint but /health and /openapi.json
needs `Authorization: Bearer <token>` (401 otherwise). Redis reads run in a
worker thread, so one slow read never stalls the server; Redis away is 503.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from dashboards.status_reader import StatusReader

log = logging.getLogger(__name__)

PUBLIC_PATHS = {"/health", "/openapi.json"}
MAX_TRADES = 10_000
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=msgspec.json.encode(data), status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message, "status": status}, status)


class BadRequest(Exception):
    pass


def _int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"query parameter {name!r} must be an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise BadRequest(f"query parameter {name!r} must be between {lo} and {hi}, got {value}")
    return value


def _bar_param(request: web.Request) -> float | None:
    raw = request.query.get("bar")
    if raw is None:
        return None
    try:
        value = float(raw.removesuffix("s"))
    except ValueError:
        raise BadRequest(f"query parameter 'bar' must be seconds (e.g. 60 or 60s), got {raw!r}") from None
    if not 0 < value <= 86400 * 7:
        raise BadRequest("query parameter 'bar' must be > 0 and at most 604800 seconds")
    return value


_KNOWN_QUERY = {"/positions": {"strategy", "symbol"}, "/trades": {"limit", "strategy", "symbol"},
                "/metrics": {"bar"}}


def create_app(reader: StatusReader, token: str = "") -> web.Application:
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if token and request.path not in PUBLIC_PATHS:
            auth = request.headers.get("Authorization", "")
            given = auth[7:] if auth.startswith("Bearer ") else ""
            if not given or not hmac.compare_digest(given.encode(), token.encode()):
                resp = _error(401, "missing or wrong bearer token")
                resp.headers["WWW-Authenticate"] = 'Bearer realm="rsc"'
                return resp
        unknown = set(request.query) - _KNOWN_QUERY.get(request.path, set())
        if unknown:
            return _error(400, f"unknown query parameter(s) {sorted(unknown)}")
        try:
            return await handler(request)
        except BadRequest as exc:
            return _error(400, str(exc))
        except web.HTTPException as exc:
            if exc.status >= 400:
                return _error(exc.status, exc.reason)
            raise
        except Exception as exc:  # Redis away, or anything else: a clean 503, never a crash
            import redis

            if isinstance(exc, redis.RedisError):
                return _error(503, f"redis unavailable: {exc}")
            log.exception("api: %s failed", request.path)
            return _error(500, f"{type(exc).__name__}: {exc}")

    async def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def health(request: web.Request) -> web.Response:
        h = await call(reader.health)
        return _json(h, 200 if h["redis"] else 503)

    async def status(request: web.Request) -> web.Response:
        return _json(await call(reader.status))

    async def account(request: web.Request) -> web.Response:
        return _json(await call(reader.account))

    async def positions(request: web.Request) -> web.Response:
        q = request.query
        return _json({"positions": await call(reader.positions, q.get("strategy"), q.get("symbol"))})

    async def orders(request: web.Request) -> web.Response:
        return _json({"orders": await call(reader.open_orders)})

    async def trades(request: web.Request) -> web.Response:
        limit = _int_param(request, "limit", 100, 1, MAX_TRADES)
        q = request.query
        return _json({"trades": await call(reader.trades, limit, q.get("strategy"), q.get("symbol"))})

    async def metrics(request: web.Request) -> web.Response:
        bar = _bar_param(request)
        perf = await call(reader.performance, bar)
        return _json(perf.to_dict())

    async def prometheus(request: web.Request) -> web.Response:
        text = await call(reader.prometheus_text)
        return web.Response(text=text, content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Hint": "text/plain; version=0.0.4"})

    async def openapi(request: web.Request) -> web.Response:
        return _json(OPENAPI)

    app = web.Application(middlewares=[guard])
    for path, h in [("/health", health), ("/status", status), ("/account", account), ("/positions", positions),
                    ("/orders", orders), ("/trades", trades), ("/metrics", metrics),
                    ("/metrics/prometheus", prometheus), ("/openapi.json", openapi)]:
        app.router.add_get(path, h)
    return app


async def serve(reader: StatusReader, host: str, port: int, token: str = "") -> web.AppRunner:
    runner = web.AppRunner(create_app(reader, token), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


def _op(summary: str, schema: dict[str, Any], params: list[dict[str, Any]] | None = None,
        content: str = "application/json", public: bool = False) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "parameters": params or [],
        "responses": {
            "200": {"description": "OK", "content": {content: {"schema": schema}}},
            "400": {"description": "Bad request", "content": {"application/json": {"schema": _ERR}}},
            "401": {"description": "Missing or wrong bearer token",
                    "content": {"application/json": {"schema": _ERR}}},
            "503": {"description": "Redis unavailable", "content": {"application/json": {"schema": _ERR}}},
        },
    }
    if public:
        op["security"] = []
        del op["responses"]["401"]
    return op


_ERR = {"type": "object", "required": ["error", "status"],
        "properties": {"error": {"type": "string"}, "status": {"type": "integer"}}}
_OBJ = {"type": "object"}
_STR_FILTER = [{"name": "strategy", "in": "query", "schema": {"type": "string"}},
               {"name": "symbol", "in": "query", "schema": {"type": "string"}}]
_STATS = {"type": "object", "properties": {k: {"type": ["number", "null"]} for k in (
    "fills", "turnover", "realized_pnl", "fees", "unrealized_pnl", "net_pnl", "sharpe", "sortino", "volatility",
    "max_drawdown", "max_drawdown_duration_s", "win_rate", "wins", "losses", "closing_fills", "bars", "bar_s")}}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "ray-strategy-cluster status API", "version": "1",
             "description": "Read-only views of a running cluster, from Redis. Conventions of the performance "
                            "figures: see /metrics `conventions`."},
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
                   "schemas": {"Error": _ERR, "Stats": _STATS}},
    "security": [{"bearer": []}],
    "paths": {
        "/health": {"get": _op("Liveness and Redis reachability (503 when Redis is away)", _OBJ, public=True)},
        "/status": {"get": _op("Actors, kill switches, order and fill counters, rejections by reason", _OBJ)},
        "/account": {"get": _op("P&L totals, exposure, turnover", _OBJ)},
        "/positions": {"get": _op("Positions with marks and P&L", _OBJ, _STR_FILTER)},
        "/orders": {"get": _op("Open orders", _OBJ)},
        "/trades": {"get": _op("Fills, newest first", _OBJ, [
            {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_TRADES,
                                                         "default": 100}}, *_STR_FILTER])},
        "/metrics": {"get": _op("Performance: total, per strategy, per symbol", {
            "type": "object", "properties": {"total": {"$ref": "#/components/schemas/Stats"},
                                             "by_strategy": {"type": "object",
                                                             "additionalProperties": {"$ref": "#/components/schemas/Stats"}},
                                             "by_symbol": {"type": "object",
                                                           "additionalProperties": {"$ref": "#/components/schemas/Stats"}},
                                             "conventions": {"type": "string"}, "as_of_ns": {"type": "integer"}}},
            [{"name": "bar", "in": "query", "description": "bar length in seconds for returns (default: auto)",
              "schema": {"type": "string", "example": "60s"}}])},
        "/metrics/prometheus": {"get": _op("Performance gauges in the Prometheus text format",
                                           {"type": "string"}, content="text/plain")},
        "/openapi.json": {"get": _op("This description", _OBJ, public=True)},
    },
}
