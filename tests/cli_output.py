"""Reading a CLI command's JSON from captured stdout in a test process that is also a Ray driver.

Ray prints its workers' log lines and "(raylet) A worker died ..." notices to the driver's stdout from
a thread, at any moment, so they can land in the middle of what capsys captured from a command. The
command's own JSON starts on a line of its own; what Ray printed before it is skipped.
"""

from __future__ import annotations

import json
from typing import Any


def json_output(out: str) -> Any:
    """The JSON document of a command's output: from its first line that opens an object or an array."""
    lines = out.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.startswith(("{", "[")):
            value, _ = json.JSONDecoder().raw_decode("".join(lines[i:]))
            return value
    raise AssertionError(f"no JSON document in the output: {out[:500]!r}")
