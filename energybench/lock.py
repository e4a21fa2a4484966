"""One writer per sweep directory: `<out_dir>/<sweep>/sweep.lock`, taken by a sweep before it writes anything.

    python -m energybench.lock show <sweep dir>     who holds the lock, and whether it is alive
    python -m energybench.lock break <sweep dir>    remove a lock whose holder is gone (you checked)

The lock file is created atomically (O_CREAT|O_EXCL) and holds its holder (host, pid and start time, Slurm
job, start time, command). It is also flock'ed while held, which a local file system releases when the
holder dies; flock over NFS is unreliable, so the holder's record and a liveness check decide: a lock
whose holder is provably gone (its pid on this host, its Slurm job ended) is stale and taken over.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from energybench.results import owner as owners

LOCK_NAME = "sweep.lock"
BREAK_STALE_S = 60.0  # a takeover marker older than this was left by a process that died mid-takeover


class LockError(RuntimeError):
    """The sweep directory is held by another sweep, or cannot be written; the message says how to proceed."""


class SweepLock:
    """The lock on one sweep directory; `release()` (or leaving the `with`) removes it."""

    def __init__(self, sweep_dir: Path, fd: int, created: list[Path]) -> None:
        self.sweep_dir, self.path, self._fd = sweep_dir, sweep_dir / LOCK_NAME, fd
        self.created = created  # directories acquire() made, deepest first

    def release(self) -> None:
        """Remove the lock, and the directories acquire() created if the sweep left them empty (a sweep that
        skipped every point leaves nothing behind); nothing else is ever removed."""
        if self._fd < 0:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._fd)  # also drops the flock
        self._fd = -1
        for directory in self.created:
            try:
                directory.rmdir()  # only if empty
            except OSError:
                break

    def __enter__(self) -> SweepLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def holder_record(command: str | None = None) -> dict[str, Any]:
    """What the lock file says about its holder: this process, when it started, and the command."""
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {**owners.this_process(), "started_at": now,
            "command": command if command is not None else os.environ.get("ENERGYBENCH_COMMAND")}


def read_holder(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def acquire(sweep_dir: Path, command: str | None = None) -> SweepLock:
    """Create the sweep directory if needed and take its lock; LockError if another live sweep holds it,
    or if the directory cannot be created or written (the message names it and the fix)."""
    sweep_dir = Path(sweep_dir).expanduser()
    created = [d for d in (sweep_dir, *sweep_dir.parents) if not d.exists()]
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LockError(f"{_where(sweep_dir)}: cannot create {e.filename or sweep_dir} ({e.strerror or e}); "
                        "choose an out_dir you can write to") from None
    path = sweep_dir / LOCK_NAME
    for _ in range(10):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            _take_over_if_stale(path)
            continue
        except OSError as e:
            raise LockError(f"{_where(sweep_dir)}: cannot write in {sweep_dir} ({e.strerror or e}); "
                            "choose an out_dir you can write to") from None
        _flock(fd)
        os.write(fd, (json.dumps(holder_record(command), indent=1) + "\n").encode())
        os.fsync(fd)
        return SweepLock(sweep_dir, fd, created)
    raise LockError(f"{path}: could not take the lock (other sweeps keep taking it); try again")


def _where(sweep_dir: Path) -> str:
    return f"out_dir={sweep_dir.parent}"


def _flock(fd: int) -> bool:
    """flock the lock file (released by the kernel if this process dies); False where unsupported."""
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except (ImportError, OSError):
        return False


def held_by_flock(path: Path) -> bool | None:
    """True if some process holds the file's flock; False if not (reliable on local file systems only);
    None where it cannot be tried."""
    try:
        import fcntl

        fd = os.open(path, os.O_RDONLY)
    except (ImportError, OSError):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    except OSError:
        return None
    finally:
        os.close(fd)


def holder_alive(path: Path, holder: dict[str, Any] | None) -> bool | None:
    """Whether the lock's holder still runs: its owner record decides (flock is only a hint, unreliable
    on NFS); None where this machine cannot tell (another host, no Slurm job to ask about)."""
    alive = owners.alive(holder)
    if alive is None and held_by_flock(path):
        return True
    return alive


def _take_over_if_stale(path: Path) -> None:
    """Remove the lock at `path` if its holder is gone; LockError naming the holder if it is not."""
    holder = read_holder(path)
    if holder is None:  # being written right now (created, not yet filled), or vanished
        if path.exists() and time.time() - _mtime(path) > BREAK_STALE_S:
            raise LockError(f"{path}: a lock file that names no holder; if no sweep runs here, remove it "
                            f"(python -m energybench.lock break {path.parent})")
        time.sleep(0.2)
        return
    alive = holder_alive(path, holder)
    if alive is False:
        _break(path, holder)
        return
    since = f" since {holder.get('started_at')}" if holder.get("started_at") else ""
    command = f" running `{holder['command']}`" if holder.get("command") else ""
    if alive:
        how = (f"wait for it to finish, stop it, or use another sweep=/out_dir= (to check: "
               f"python -m energybench.lock show {path.parent})")
    else:
        how = ("this machine cannot check that host; if that sweep is gone (its Slurm job no longer in squeue/sacct, "
               f"or its process ended), remove the lock: python -m energybench.lock break {path.parent}")
    raise LockError(f"sweep directory {path.parent} is in use by {owners.describe(holder)}{since}{command}; {how}")


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return time.time()


def _break(path: Path, holder: dict[str, Any]) -> None:
    """Remove a stale lock; a takeover marker (O_EXCL) keeps two sweeps from both removing a fresh lock."""
    marker = path.with_name(path.name + ".break")
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        if time.time() - _mtime(marker) > BREAK_STALE_S:
            marker.unlink(missing_ok=True)
        time.sleep(0.2)
        return
    try:
        if read_holder(path) == holder:  # still the stale one, not a lock another sweep just took
            path.unlink(missing_ok=True)
            print(f"warning: removed the stale lock of {owners.describe(holder)} (gone) on {path.parent}",
                  file=sys.stderr)
    finally:
        os.close(fd)
        marker.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in ("show", "break"):
        print("usage: python -m energybench.lock show|break <out_dir>/<sweep>", file=sys.stderr)
        return 2
    path = Path(args[1]).expanduser() / LOCK_NAME
    holder = read_holder(path)
    if not path.exists():
        print(f"{args[1]}: not locked")
        return 0
    alive = holder_alive(path, holder)
    state = {True: "alive", False: "gone", None: "cannot be checked from this host"}[alive]
    print(f"{path}: held by {owners.describe(holder)} since {(holder or {}).get('started_at')} ({state}); "
          f"command: {(holder or {}).get('command')}")
    if args[0] == "break":
        if alive:
            print(f"error: {owners.describe(holder)} is alive; stop that sweep first", file=sys.stderr)
            return 1
        path.unlink(missing_ok=True)
        print(f"removed {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
