"""Polling for the integration tests: a cluster reaches a state in its own time, and a test waits for it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(pred: Callable[[], Any], timeout: float, what: str, every: Callable[[], Any] | None = None,
             interval: float = 0.25) -> None:
    """Poll `pred` until it is true; fail naming `what` after `timeout` seconds. `every` runs before each poll."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if every is not None:
            every()
        if pred():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")
