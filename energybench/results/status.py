"""A point's status: the state machine every launcher goes through (the only writer of status.json), and the
state readers see (`running` turned `interrupted` once its owner is gone; tables that do not read back).

    (none) -> pending -> running -> done | failed        pending: planned, or queued as a Slurm job
                 ^          |  ^                         running: attempt n started (its owner recorded)
                 +----------+  +-- running (attempt n+1: requeued, re-run by hand)
    interrupted: derived, never written: running, but its owner process or Slurm job is gone
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from energybench.results import owner as owners
from energybench.results.store import read_status, write_status

PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"
INTERRUPTED = "interrupted"  # derived, never written: status.json says running, but its owner is gone
# state -> the states it may be written from (None: no status.json yet)
_FROM: dict[str, tuple[str | None, ...]] = {
    PENDING: (None, PENDING, RUNNING, DONE, FAILED),  # planned again (resume, resume=false), queued, requeued
    RUNNING: (None, PENDING, RUNNING, DONE, FAILED),  # a new attempt (a point run by hand needs no plan)
    DONE: (RUNNING,),  # only the attempt that ran writes its result
    FAILED: (None, PENDING, RUNNING, DONE, FAILED),  # the launcher's reason replaces the point's own
}


@dataclass(frozen=True)
class PointOutcome:
    """How a point ended, as a launcher returns it to the sweep."""

    point_id: str
    state: str  # done | failed
    reason: str | None = None
    row: dict | None = None  # the run.parquet row (rank 0 of a done point)
    interrupted: bool = False  # ended by SIGTERM/SIGINT (preemption, time limit, scancel): may be requeued


class StateError(RuntimeError):
    """A status transition the state machine does not have (a bug in a launcher, not a user error)."""


def _write(point_dir: Path, state: str, reason: str | None = None, **extra: Any) -> dict:
    before = (read_status(point_dir) or {}).get("state")
    if before not in _FROM[state]:
        raise StateError(f"{point_dir.name}: status {before} -> {state} is not a transition of a point")
    return write_status(point_dir, state, reason, **extra)


def mark_pending(point_dir: Path, **submission: Any) -> dict:
    """Planned to run (the planner), or queued as a Slurm job (`submission`: its submitit job id, folder, tasks)."""
    return _write(point_dir, PENDING, **submission)


def mark_running(point_dir: Path, **where: Any) -> dict:
    """Attempt n+1 starts in this process (rank 0): records its owner (host, pid, start time, boot, Slurm
    job) so readers can tell a live run from a dead one; `where`: host, slurm_job_id, git_commit."""
    return _write(point_dir, RUNNING, **where)


def mark_done(point_dir: Path) -> dict:
    """The running attempt wrote its result (run.parquet)."""
    return _write(point_dir, DONE)


def mark_failed(point_dir: Path, reason: str) -> dict:
    """The point failed with `reason` (one line); written again only if the state or reason changes, so the
    launcher's verdict (a rank's error, Slurm's end state) replaces the point's own without churn."""
    status = read_status(point_dir) or {}
    if status.get("state") == FAILED and status.get("reason") == reason:
        return status
    return _write(point_dir, FAILED, reason)


def interrupted_reason(status: Mapping[str, Any]) -> str | None:
    """Why a `running` point is in fact interrupted (its owner process or Slurm job is gone), else None
    (not running, owner alive, or this machine cannot tell)."""
    if status.get("state") != "running":
        return None
    owner = status.get("owner")
    if owners.alive(owner) is not False:
        return None
    return (f"interrupted: {owners.describe(owner, ended=True)} that ran attempt {status.get('attempt')} is gone (killed, "
            "out of disk or node lost) without recording a result; re-run the sweep to measure it again")


def current_state(status: Mapping[str, Any] | None) -> tuple[str | None, str | None]:
    """(state, reason) of a point: status.json's, except `running` -> `interrupted` when its owner is gone."""
    if not status:
        return None, None
    why = interrupted_reason(status)
    if why is not None:
        return INTERRUPTED, why
    return status.get("state"), status.get("reason")


POINT_TABLES = ("run.parquet", "batches.parquet", "gpus.parquet")  # rank 0's tables, read whole by `broken_files`


def parquet_problem(path: Path, whole: bool = True) -> str | None:
    """Why `path` does not read back as Parquet (truncated, not Parquet, unreadable), or None. `whole` reads
    every row (a damaged page); otherwise only the footer (a truncated file), which is cheap."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if whole:
            pq.read_table(path)
        else:
            pq.read_metadata(path)
    except (OSError, pa.ArrowException) as e:
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'unreadable'}"
    return None


def broken_files(point_dir: Path) -> list[tuple[Path, str]]:
    """(file, problem) of each of the point's tables (run, batches, gpus) that exists but does not read back."""
    out = []
    for name in POINT_TABLES:
        path = point_dir / name
        if path.is_file():
            problem = parquet_problem(path)
            if problem is not None:
                out.append((path, problem))
    return out


BROKEN = "broken"  # derived: status.json says done, but run.parquet does not read back
ON_ERROR = ("warn", "raise")  # what loaders do with a file that does not read back


class BrokenFileWarning(UserWarning):
    """A results file that does not read back was skipped (loaders' on_error='warn')."""


class BrokenFileError(ValueError):
    """A results file does not read back (loaders' on_error='raise'); the message names it."""


def check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error={on_error!r}: must be one of {', '.join(ON_ERROR)}")


def drop_broken(files: list[Path], on_error: str) -> tuple[list[Path], dict[Path, str]]:
    """(files that read back, {file: problem} of those that do not). Each broken file is a BrokenFileWarning
    naming it (on_error='warn'), or the first one raises BrokenFileError (on_error='raise')."""
    import warnings

    check_on_error(on_error)
    good, broken = [], {}
    for f in files:
        problem = parquet_problem(f)
        if problem is None:
            good.append(f)
            continue
        message = (f"{f}: does not read back as Parquet ({problem}); re-run its sweep (resume measures the point "
                   "again)")
        if on_error == "raise":
            raise BrokenFileError(message + ", or pass on_error='warn' to skip it")
        warnings.warn(message + "; skipped", BrokenFileWarning, stacklevel=3)
        broken[f] = problem
    return good, broken
