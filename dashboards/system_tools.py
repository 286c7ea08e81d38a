"""Find (or, as root, install through `install_system_tools.sh`) the Debian tools the tests drive."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

INSTALL_SCRIPT = Path(__file__).resolve().parent / "install_system_tools.sh"


def ensure_tool(name: str, timeout_s: float = 600.0) -> tuple[str | None, str]:
    """(path, "") if `name` is on PATH or could be installed; (None, why) if it is absent and cannot be."""
    found = shutil.which(name)
    if found:
        return found, ""
    if os.geteuid() != 0:
        return None, f"{name} is not installed and this user is not root (run {INSTALL_SCRIPT} as root)"
    try:
        proc = subprocess.run(["bash", str(INSTALL_SCRIPT), name], capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return None, f"installing {name} took longer than {timeout_s:.0f}s"
    found = shutil.which(name)
    if found:
        return found, ""
    return None, f"installing {name} failed: {proc.stderr.strip()[-300:]}"
