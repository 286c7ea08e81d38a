"""Start and stop the venue simulator as a child process (what `make run` does for `market.source: simulator`)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import msgspec

from cluster.child_process import ends_with_parent


def _absolute_replay_paths(cfg: Any) -> Any:
    """The simulator runs in the repository: relative `market.replay_path`s are made absolute here."""
    market = getattr(cfg, "market", None)
    if market is None or not market.replay_path:
        return cfg
    from cluster.config import replay_specs

    specs = [f"{sym}={Path(p).expanduser().resolve()}" if sym else str(Path(p).expanduser().resolve())
             for sym, p in replay_specs(market.replay_path)]
    return msgspec.structs.replace(cfg, market=msgspec.structs.replace(market, replay_path=specs))


class SimulatorStartError(RuntimeError):
    """The simulator process did not come up; the message names its log file."""


class SimulatorProcess:
    """`python -m gateways.venue_sim` on a free port, its config written beside its log in `run_dir`."""

    def __init__(self, cfg: Any, run_dir: Path, extra_args: list[str] | None = None) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen | None = None
        self.info: dict[str, Any] = {}
        self.log_path = self.run_dir / "venue_sim.log"

    @property
    def http_url(self) -> str:
        return self.info.get("rest_url", "")

    @property
    def ws_url(self) -> str:
        return self.info.get("ws_url", "")

    def start(self, timeout_s: float = 30.0) -> SimulatorProcess:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        cfg_path = self.run_dir / "venue_sim_config.json"
        cfg_path.write_bytes(msgspec.json.encode(_absolute_replay_paths(self.cfg)))
        repo = Path(__file__).resolve().parents[2]
        # It runs in the repository; the launcher's folder stays importable (a strategy of the user's own that
        # the config names is imported when the simulator reads the config).
        path = (str(repo), os.getcwd(), os.environ.get("PYTHONPATH", ""))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            ends_with_parent([sys.executable, "-m", "gateways.venue_sim", "--config", str(cfg_path), "--port", "0",
                              *self.extra_args]),
            stdout=subprocess.PIPE, stderr=log, cwd=str(repo), env=env)
        log.close()
        line: list[bytes] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout_s)
        if not line or not line[0]:
            exited = bool(line)  # its output ended (EOF) before it said it listens: it stopped, not slow
            self.stop()
            if exited:
                said = self.log_path.read_text(errors="replace").strip().splitlines() if self.log_path.exists() else []
                raise SimulatorStartError(f"the venue simulator stopped at start: {said[-1] if said else 'no output'}; "
                                          f"see {self.log_path}")
            raise SimulatorStartError(f"the venue simulator did not start within {timeout_s:.0f} s; see {self.log_path}")
        try:
            self.info = json.loads(line[0])
        except ValueError:
            self.stop()
            raise SimulatorStartError(f"the venue simulator said {line[0][:200]!r}; see {self.log_path}") from None
        return self

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        self.proc = None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        with contextlib.suppress(Exception):
            proc.stdout.close()  # type: ignore[union-attr]
