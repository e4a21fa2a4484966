"""Why a point failed, in one place: an exception's one-line reason, the ranks' error files and which came
first, a local rank that died without a word, a Slurm job that ended without a result (sacct's end state)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence


def error_reason(e: BaseException) -> str:
    """One line naming the exception (CUDA out-of-memory errors cut to their first line)."""
    if type(e).__name__ == "OutOfMemoryError" and type(e).__module__.startswith("torch"):
        return f"CUDA out of memory: {str(e).splitlines()[0]}"
    return f"{type(e).__name__}: {e}".strip()


def error_path(point_dir: Path, rank: int) -> Path:
    """errors/rank-<k>.json: {reason, failed_at_unix_s} of rank k's first error (multi-rank points)."""
    return point_dir / "errors" / f"rank-{rank}.json"


def rank_errors(point_dir: Path, since_unix_s: float = 0.0) -> dict[int, tuple[float, str]]:
    """rank -> (failed_at_unix_s, reason) from the point's errors/rank-<k>.json, raised at or after
    `since_unix_s` (older files are an earlier attempt's)."""
    folder = point_dir / "errors"
    out = {}
    for path in sorted(folder.glob("rank-*.json")) if folder.is_dir() else []:
        try:
            error = json.loads(path.read_text())
            rank, failed_at = int(path.stem.removeprefix("rank-")), float(error["failed_at_unix_s"])
        except (ValueError, KeyError, TypeError):
            continue  # written whole and renamed into place, so only a foreign file lands here
        if failed_at >= since_unix_s:
            out[rank] = (failed_at, str(error["reason"]))
    return out


def first_error(errors: Mapping[int, tuple[float, str]]) -> str | None:
    """The point's reason from its ranks' errors: the earliest one (the teardown of a failing rank breaks
    the collectives the others wait in), as "rank <k>: ..." unless it is rank 0's."""
    if not errors:
        return None
    rank = min(errors, key=lambda r: (errors[r][0], r))
    return errors[rank][1] if rank == 0 else f"rank {rank}: {errors[rank][1]}"


def local_reason(point_dir: Path, failed_rank: int | None, returncodes: Sequence[int | None],
                 status: Mapping[str, object]) -> str:
    """Why a point whose ranks ran here failed: a rank that died without writing its error (OOM killer,
    SIGKILL), else the first rank error, else the point's own status reason, else rank 0's exit code."""
    errors = rank_errors(point_dir)  # this attempt's: the launcher clears errors/ before the ranks start
    if failed_rank not in (None, 0) and failed_rank not in errors:
        return f"rank {failed_rank} exited with code {returncodes[failed_rank]}"
    if errors:
        return str(first_error(errors))
    if status.get("state") == "failed" and status.get("reason"):
        return str(status["reason"])
    return f"rank 0 exited with code {returncodes[0]}"


def recorded_reason(point_dir: Path, status: Mapping[str, object], since_unix_s: float) -> str | None:
    """What a point run in a Slurm job recorded itself: the first failing rank's error since the job was
    submitted, else its status reason, else that it was still running when the job ended."""
    reason = first_error(rank_errors(point_dir, since_unix_s=since_unix_s))
    if reason:
        return reason
    if status.get("state") == "failed" and status.get("reason"):
        return str(status["reason"])
    if status.get("state") == "running":
        return f"the point was running (attempt {status.get('attempt')}) when the job ended"
    return None


def job_ended_reason(job_id: str, end_state: str, detail: str | None) -> str:
    """A Slurm job that ended without a result: sacct's end state (CANCELLED, NODE_FAIL, ...) and what is known."""
    return f"Slurm job {job_id} ended {end_state}" + (f": {detail}" if detail else "")


def timed_out_reason(job_id: str, time_min: int, max_requeues: int) -> str:
    """submitit gave up after the job reached its time limit max_requeues + 1 times."""
    return (f"Slurm job {job_id} reached its time limit (cluster.time_min={time_min}) {max_requeues + 1} times "
            f"(cluster.max_requeues={max_requeues}); raise cluster.time_min")


def last_line(e: BaseException) -> str:
    """The last non-blank line of an error (sbatch's own message ends submitit's)."""
    lines = [line for line in str(e).splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(e).__name__


def last_error_line(trace: str) -> str | None:
    """The last `SomeError: ...` line of a traceback (a failed job's)."""
    lines = [line.strip() for line in trace.splitlines() if line.strip() and not set(line.strip()) <= {"-"}]
    errors = [line for line in lines if "Error" in line.split(":")[0] or "Exception" in line.split(":")[0]]
    return errors[-1] if errors else None
