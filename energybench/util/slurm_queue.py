"""What Slurm says of a job: squeue while it has not ended (`queue_entry`), sacct's final state after
(`end_state`). The one place energybench asks them (the dispatcher, and point owners in results.owner)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

# squeue states of a job that has not ended (a requeued job comes back under the same id)
ALIVE_STATES = ("PENDING", "RUNNING", "REQUEUED", "SUSPENDED", "COMPLETING", "CONFIGURING", "RESIZING",
                "REQUEUE_HOLD", "REQUEUE_FED", "STAGE_OUT", "SIGNALING", "PREEMPTED")


@dataclass(frozen=True)
class QueueEntry:
    state: str  # squeue's %T: PENDING, RUNNING, REQUEUED, COMPLETING, ...
    start_unix_s: float | None  # when the current run started (%S); None before it starts


class QueueUnknown(RuntimeError):
    """squeue did not answer (missing, timed out, or the controller refused): the job's state is not known."""


def queue_entry(job_id: str) -> QueueEntry | None:
    """Slurm job `job_id` as squeue lists it while it has not ended, or None once squeue no longer lists it (or
    lists it ended). QueueUnknown when squeue itself fails: a loaded controller must not read as a job's end."""
    try:  # start time as Unix seconds, whatever the user's SLURM_TIME_FORMAT
        out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T|%S"], capture_output=True, text=True,
                             timeout=30, env={**os.environ, "SLURM_TIME_FORMAT": "%s"})
    except (OSError, subprocess.SubprocessError) as e:
        raise QueueUnknown(f"squeue -j {job_id}: {e}") from None
    if out.returncode != 0:
        if "Invalid job id" in out.stderr:  # purged from the controller: ended long ago
            return None
        raise QueueUnknown(f"squeue -j {job_id}: {out.stderr.strip() or f'exit {out.returncode}'}")
    line = out.stdout.strip().split("\n")[0]
    state, _, start = line.partition("|")
    if state not in ALIVE_STATES:
        return None
    return QueueEntry(state, _unix_s(start))


def _unix_s(stamp: str) -> float | None:
    """squeue's %S under SLURM_TIME_FORMAT=%s (Unix seconds) as a number; None for N/A or Unknown."""
    try:
        value = float(stamp.strip())
    except ValueError:
        return None
    return value if value > 0 else None


def end_state(job_id: str) -> str:
    """The final state sacct records for job `job_id` (COMPLETED, CANCELLED, NODE_FAIL, OUT_OF_MEMORY,
    TIMEOUT, FAILED, ...), or UNKNOWN where accounting does not answer."""
    try:
        out = subprocess.run(["sacct", "-X", "-n", "-P", "-j", job_id, "-o", "State"], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "UNKNOWN"
    lines = [line.split()[0] for line in out.stdout.splitlines() if line.strip()]
    return lines[-1] if lines else "UNKNOWN"  # "CANCELLED by 0" -> CANCELLED
