"""The processes a run starts (its Redis, the venue simulator) end with it, even when it is killed with SIGKILL.

On Linux a process can ask for a signal when its parent dies (`prctl(PR_SET_PDEATHSIG)`). A short Python
prefix asks for SIGTERM, checks the parent is still the one that started it (else it is gone already), then
execs the real program: nothing runs in the launcher between fork and exec (no `preexec_fn`, which is unsafe
with Ray's threads). The signal follows the *thread* that started the child, so the prefix is used only from
the main thread; from another thread, and off Linux, the command is left as it is.
"""

from __future__ import annotations

import os
import sys
import threading

PR_SET_PDEATHSIG = 1
_PREFIX = (
    "import ctypes, os, signal, sys; "
    f"ctypes.CDLL(None, use_errno=True).prctl({PR_SET_PDEATHSIG}, signal.SIGTERM); "
    "os.getppid() == int(sys.argv[1]) or sys.exit(0); "
    "os.execvp(sys.argv[2], sys.argv[2:])"
)


def ends_with_parent(command: list[str]) -> list[str]:
    """`command`, prefixed so that the process gets SIGTERM when this one dies (see the module docstring)."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return command
    return [sys.executable, "-c", _PREFIX, str(os.getpid()), *command]
