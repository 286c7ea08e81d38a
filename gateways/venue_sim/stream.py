"""One WebSocket subscriber's outgoing market data, with the fault plan applied on the way out.

Messages are queued by the exchange's tick (synchronous) and written by one sender task, so a
slow client never blocks the market; like the real venues, a client whose queue overflows is
disconnected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web

from gateways.venue_sim.exchange import FaultPlan

log = logging.getLogger(__name__)

_CLOSE = object()


class FaultyStream:
    """Queue + sender task for one connection; `counters` say which faults were injected."""

    def __init__(self, ws: web.WebSocketResponse, faults: FaultPlan, max_queue: int = 10_000) -> None:
        self.ws = ws
        self.faults = faults
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=max_queue)
        self.sent = 0
        self.counters = {"dropped": 0, "duplicated": 0, "reordered": 0, "delayed": 0, "disconnected": 0,
                         "overflow": 0}
        self.task: asyncio.Task | None = None
        self.closed = False

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    def offer(self, msg: bytes | str) -> None:
        """Queue one market-data message (never blocks; on overflow the connection is closed)."""
        if self.closed:
            return
        try:
            self.queue.put_nowait(msg)
        except asyncio.QueueFull:
            self.counters["overflow"] += 1
            self.closed = True
            with contextlib.suppress(asyncio.QueueFull):
                self.queue.get_nowait()
                self.queue.put_nowait(_CLOSE)

    async def send_now(self, msg: bytes | str) -> None:
        """A control message (subscription answer, error): no faults, straight to the socket."""
        await self._write(msg)

    async def _write(self, msg: bytes | str) -> None:
        if isinstance(msg, bytes):
            msg = msg.decode()
        await self.ws.send_str(msg)

    async def _run(self) -> None:
        f = self.faults
        held: bytes | str | None = None
        try:
            while True:
                msg = await self.queue.get()
                if msg is _CLOSE:
                    break
                if f.roll(f.drop):
                    self.counters["dropped"] += 1
                    continue
                if f.delay_ms and f.roll(f.delay):
                    self.counters["delayed"] += 1
                    await asyncio.sleep(f.delay_ms / 1000.0)
                if held is None and f.roll(f.reorder):
                    held = msg
                    self.counters["reordered"] += 1
                    continue
                await self._write(msg)
                if f.roll(f.duplicate):
                    self.counters["duplicated"] += 1
                    await self._write(msg)
                if held is not None:
                    await self._write(held)
                    held = None
                self.sent += 1
                if f.disconnect_after and self.sent >= f.disconnect_after:
                    self.counters["disconnected"] += 1
                    break
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            pass
        finally:
            self.closed = True
            with contextlib.suppress(Exception):
                await self.ws.close()

    async def stop(self) -> None:
        self.closed = True
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
