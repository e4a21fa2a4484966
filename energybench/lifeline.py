"""A rank process that dies with the local sweep that started it, so a `kill -9` of the sweep leaves no orphan.

    python -m energybench.lifeline [energybench.point arguments]

runs `energybench.point` after two guards, given the parent's pid in $ENERGYBENCH_PARENT_PID:
Linux's parent-death signal (prctl PR_SET_PDEATHSIG: SIGTERM, so the rank records its failure and restores
power limits), and a thread that watches the parent and kills this process `grace_s` after the parent is
gone (a rank blocked in a collective may not act on SIGTERM; also covers other systems).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Ask Linux to send `sig` to this process when its parent dies; False where not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def watch_parent(parent_pid: int, grace_s: float = 10.0, poll_s: float = 0.5) -> threading.Thread:
    """A daemon thread that SIGKILLs this process `grace_s` after its parent `parent_pid` is gone."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        time.sleep(grace_s)  # SIGTERM (parent-death signal) gets its chance to run the `finally`s first
        os.kill(os.getpid(), signal.SIGKILL)

    thread = threading.Thread(target=watch, name="energybench-lifeline", daemon=True)
    thread.start()
    return thread


def die_with_parent(parent_pid: int, grace_s: float = 10.0) -> None:
    """Both guards; exits at once if the parent already died before they were set."""
    set_parent_death_signal()
    if os.getppid() != parent_pid:  # the parent died between fork and prctl
        sys.exit(143)
    watch_parent(parent_pid, grace_s)


def main(argv: list[str] | None = None) -> int:
    parent = os.environ.get("ENERGYBENCH_PARENT_PID", "")
    if parent.isdigit():
        die_with_parent(int(parent))
    from energybench.point import main as point_main

    return point_main(argv)


if __name__ == "__main__":
    sys.exit(main())
