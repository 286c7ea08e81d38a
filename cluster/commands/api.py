"""`python -m cluster api --config FILE`: serve the status API (read-only, from Redis) until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import Any

from cluster.config_base import ConfigError

DEFAULT_CONFIG = "configs/paper.yaml"


def register(sub: Any) -> None:
    p = sub.add_parser("api", help="serve the status API (GET /health /status /account /positions /trades /metrics)")
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--host", default=None, help="listen address (default: api.host, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="listen port (default: api.port, 8600)")
    p.add_argument("--json-logs", action="store_true", help="structured JSON log lines")
    p.set_defaults(func=cmd_api)


def api_section(cfg: Any) -> Any:
    """The config's `api:` section, or the defaults while the config does not have one."""
    from dashboards.api_config import ApiSection

    return getattr(cfg, "api", None) or ApiSection()


def cmd_api(args: argparse.Namespace) -> int:
    import msgspec

    from cluster.cli import connect_store
    from cluster.config import load_config
    from dashboards.api import serve
    from dashboards.logging_setup import setup_logging
    from dashboards.status_reader import StatusReader

    setup_logging(json_format=args.json_logs)
    cfg = load_config(args.config)
    section = api_section(cfg)
    changes = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if changes:
        section = msgspec.structs.replace(section, **changes)
    section.validate()
    if not section.enabled:
        raise ConfigError("api.enabled", "the status API is disabled in this config")
    reader = StatusReader(connect_store(cfg))
    token = section.effective_token()

    async def main() -> None:
        try:
            runner = await serve(reader, section.host, section.port, token)
        except OSError as exc:
            from cluster.cli import CliError

            raise CliError(f"cannot listen on {section.host}:{section.port}: {exc.strerror}") from None
        auth = "bearer token required" if token else "no token (localhost only)"
        print(f"status API on http://{section.host}:{section.port}  ({auth}); OpenAPI at /openapi.json", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    return 0
