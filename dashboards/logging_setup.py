"""Structured logs: one JSON object per line (or the usual text), each carrying the actor's name.

Inside a Ray actor the name comes from Ray's runtime context (`feed:paper:BTCUSDT`,
`risk`, ...); in the driver or a CLI it is `driver`. Enable in any process with
`setup_logging(json_format=True)`, or for every actor by setting the environment
variable `RSC_LOG_JSON=1` in Ray's runtime env and calling `setup_logging()` in the
actor's `__init__` (it reads the variable).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
from typing import Any

ENV_JSON = "RSC_LOG_JSON"
_STD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "actor"}


def actor_name() -> str:
    """This process's actor name from Ray's runtime context, or "driver"."""
    try:
        import ray

        if ray.is_initialized():
            ctx = ray.get_runtime_context()
            if ctx.get_actor_id() is not None:
                return ctx.get_actor_name() or ctx.get_actor_id()
    except Exception:
        pass
    return "driver"


class ActorFilter(logging.Filter):
    """Adds `record.actor`; the name is looked up once per process (an actor's name does not change)."""

    def __init__(self) -> None:
        super().__init__()
        self._name: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if self._name is None or self._name == "driver":
            self._name = actor_name()
        record.actor = self._name
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "actor": getattr(record, "actor", None) or actor_name(),
            "msg": record.getMessage(),
        }
        for k, v in vars(record).items():  # `extra={...}` fields
            if k not in _STD_ATTRS and not k.startswith("_"):
                out[k] = v if isinstance(v, (str, int, float, bool, type(None))) else repr(v)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)s [%(actor)s] %(name)s: %(message)s"


def setup_logging(json_format: bool | None = None, level: int = logging.INFO, stream: Any = None) -> logging.Handler:
    """Replace the root logger's handlers with one that carries the actor name (JSON or text)."""
    if json_format is None:
        json_format = os.environ.get(ENV_JSON, "") not in ("", "0", "false")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(ActorFilter())
    handler.setFormatter(JsonFormatter() if json_format else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
