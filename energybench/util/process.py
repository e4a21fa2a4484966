"""Is a process of this host alive: the one check the sweep lock, point owners and power-state files share."""

from __future__ import annotations

import os
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists on this host and has not exited (another user's counts: it
    exists). A zombie has exited: a rank whose sweep was killed is reparented, and where nothing reaps it (a
    container whose pid 1 is no init) it stays a zombie, which must not keep its point `running`."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no /proc (or gone since): os.kill's answer stands
        return True
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")  # the state field follows the command's ")"
