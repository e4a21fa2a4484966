"""What a sweep does around its dispatcher, whatever launches the points: the Slurm client check, one lock per
sweep directory, the outcome table and its summary, Slurm's own energy figure afterwards."""

from __future__ import annotations

import shutil
import sys
from typing import Any, Sequence

from energybench.results.layout import Point
from energybench.results.status import PointOutcome, mark_failed


def check_slurm_client(points: Sequence[Point]) -> None:
    """cluster=slurm needs Slurm's client commands here (sbatch submits, squeue/sacct follow the jobs); exit 2."""
    slurm = [p for p in points if p.cfg.cluster.launcher == "slurm"]
    missing = [cmd for cmd in ("sbatch", "squeue", "sacct") if slurm and shutil.which(cmd) is None]
    if missing:
        print(f"error: cluster={slurm[0].cfg.cluster.name}: {', '.join(missing)} not on PATH (no Slurm client on "
              "this machine); run the sweep on the cluster's login node, or use cluster=local", file=sys.stderr)
        sys.exit(2)


def lock_sweeps(points: Sequence[Point]) -> list[Any]:
    """Take the lock of every sweep directory of the grid (one writer per sweep directory) before anything
    is written; exit 2 with the holder and how to proceed if another sweep holds one, or if out_dir cannot
    be written."""
    from energybench.lock import LockError, acquire

    locks: list[Any] = []
    try:
        for directory in sorted({p.dir.parent.resolve() for p in points}):
            locks.append(acquire(directory))
    except LockError as e:
        for lock in locks:
            lock.release()
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    return locks


def outcome_row(point: Point, outcome: Any) -> dict:
    """The summary row of a launched point; anything but a PointOutcome (the exception a launcher caught) fails
    the point with its reason."""
    if isinstance(outcome, PointOutcome):
        return {**(outcome.row or {}), "point_id": outcome.point_id, "status": outcome.state,
                "reason": outcome.reason}
    reason = f"{type(outcome).__name__}: {outcome}"
    try:
        mark_failed(point.dir, reason)
    except OSError as e:  # a full or read-only disk: the table is still printed, with the reason
        reason += f" (and status.json could not be written: {e.strerror or e})"
    return {"point_id": point.id, "status": "failed", "reason": reason}


def record_sacct(points: Sequence[Point]) -> None:
    """Slurm's own energy figure beside ours, now that the jobs have ended (null with the reason if none)."""
    from energybench.energy.sacct import record

    for point in points:
        if point.cfg.cluster.launcher == "slurm":
            record(point.dir)


def report(rows: list[dict], interrupted: Sequence[tuple[Point, str]]) -> None:
    """The outcome table, what was measured again, every failure and skip with its reason, the counts."""
    from energybench.results.summary import format_table

    print("\n" + format_table(rows))
    for point, why in interrupted:
        print(f"measured again {point.id}: it was {why.split('; re-run')[0]}")
    for r in rows:
        if r["status"] == "failed" or (r["status"] == "skipped" and not r["reason"].startswith("already done")):
            print(f"{r['status']} {r['point_id']}: {r.get('reason')}")
    counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "failed", "skipped")}
    print(f"{counts['done']} done, {counts['failed']} failed, {counts['skipped']} skipped")
