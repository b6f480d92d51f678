"""Why a job failed, or what it waits for, read from its logs: the lines snndist prints, not Ray's dump.

Pure text; ``snndist status`` and ``snndist jobs`` show what these return.
"""
from __future__ import annotations

import re

ERROR_PREFIX = "snndist: error: "
# ``waiting_line`` in ``snndist.dist.cluster``: "waiting for 2 x {CPU: 1} (PACK), 0 free (...)".
_WAITING = re.compile(r"^waiting for (\d+ x \{[^}]*\}) \(\w+\), ([^()]+?) free \(")
_PLACED = re.compile(r"^placed \d+ x \{")
# The last line of a Python traceback: ``ModuleNotFoundError: No module named 'etils'``, ``KeyError``.
_EXCEPTION = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt))(:.*)?$")


def failure_reason(logs: str) -> str | None:
    """snndist's own last error line, else the last exception line of a traceback; None if neither."""
    lines = [line.strip() for line in logs.splitlines()]
    for line in reversed(lines):
        if line.startswith(ERROR_PREFIX):
            return line
    for line in reversed(lines):
        if _EXCEPTION.match(line):
            return line
    return None


def waiting_reason(logs: str) -> str | None:
    """``waiting for 2 x {CPU: 1}, 0 free`` if the run's newest word on resources is that it waits."""
    for line in reversed(logs.splitlines()):
        line = line.strip()
        if _PLACED.match(line):
            return None
        match = _WAITING.match(line)
        if match:
            return f"waiting for {match.group(1)}, {match.group(2)} free"
    return None
