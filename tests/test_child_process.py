"""A process the run starts (Redis, the venue simulator) ends when the run is killed outright (SIGKILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cluster.child_process import ends_with_parent

# A parent that starts a long sleep the way the launcher starts its children, says the child's pid, then waits.
PARENT = """
import subprocess, sys, time
sys.path.insert(0, {repo!r})
from cluster.child_process import ends_with_parent
child = subprocess.Popen(ends_with_parent(["sleep", "300"]))
print(child.pid, flush=True)
time.sleep(300)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is dead
        return f.read().split(")")[-1].split()[0] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux's")
def test_the_child_gets_sigterm_when_its_parent_is_killed():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parent = subprocess.Popen([sys.executable, "-c", PARENT.format(repo=repo)], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        deadline = time.monotonic() + 10
        while not Path(f"/proc/{child}/cmdline").read_text().startswith("sleep"):  # exec'd into the real program
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert alive(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while alive(child):
            assert time.monotonic() < deadline, "the child outlived its killed parent"
            time.sleep(0.05)
    finally:
        parent.kill()
        parent.wait()


def test_the_command_is_kept_as_is_off_the_main_thread():
    import threading

    out: list[list[str]] = []
    t = threading.Thread(target=lambda: out.append(ends_with_parent(["redis-server", "--port", "1"])))
    t.start()
    t.join()
    assert out == [["redis-server", "--port", "1"]]
    assert ends_with_parent(["x"])[-1] == "x" and ends_with_parent(["x"])[3] == str(os.getpid())
