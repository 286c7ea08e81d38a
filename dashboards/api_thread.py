"""Run the status API in a background thread of the launcher process, with its own event loop."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from dashboards.api import serve
from dashboards.api_config import ApiSection
from dashboards.status_reader import StatusReader


class StatusApiThread:
    def __init__(self, store: Any, section: ApiSection):
        self.reader = StatusReader(store)
        self.section = section
        self.loop: asyncio.AbstractEventLoop | None = None
        self.runner: Any = None
        self.thread: threading.Thread | None = None
        self.url = f"http://{section.host}:{section.port}"

    def start(self, timeout_s: float = 10.0) -> str:
        """Start serving; returns "" once listening, else why it could not (e.g. the port is in use)."""
        started = threading.Event()
        error: list[str] = []

        def run() -> None:
            self.loop = asyncio.new_event_loop()
            try:
                self.runner = self.loop.run_until_complete(
                    serve(self.reader, self.section.host, self.section.port, self.section.effective_token()))
            except OSError as exc:
                error.append(f"cannot listen on {self.section.host}:{self.section.port}: {exc.strerror}")
                started.set()
                self.loop.close()
                return
            started.set()
            self.loop.run_forever()
            self.loop.run_until_complete(self.runner.cleanup())
            self.loop.close()

        self.thread = threading.Thread(target=run, name="status-api", daemon=True)
        self.thread.start()
        if not started.wait(timeout_s):
            return "timed out starting"
        return error[0] if error else ""

    def stop(self) -> None:
        if self.loop is not None and self.thread is not None and self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=5)
