"""Whether a process still runs, by pid (signal 0: nothing is sent)."""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
    """True while `pid` exists, also when it belongs to another user (PermissionError)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
