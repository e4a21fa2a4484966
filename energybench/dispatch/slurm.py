"""Run points as Slurm jobs (submitit) and return their outcomes: the same interface as dispatch.local.

One job per point, sized from that point's config (energybench.slurm.executor_parameters); points of
one shape go in one job array, and every array is queued before any is waited on. A job a previous
run of the sweep submitted, still queued or running, is waited for instead of submitted again. A job
that ended without a result (scancel, node failure, OOM kill, time limit out of requeues, refused by
sbatch) is a failed point with its reason (energybench.results.failures).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from energybench.results import failures
from energybench.results.layout import Point
from energybench.results.status import PointOutcome, mark_failed, mark_pending
from energybench.results.store import read_status

log = logging.getLogger("energybench.slurm")

EXIT_INTERRUPTED = 143  # 128 + SIGTERM, as a shell reports a job killed by it
QUEUE_UNKNOWN_MAX_S = 600.0  # squeue silent this long about a job whose rank 0 left a result: take the result
CLOCK_SLACK_S = 5.0  # a result file's time (file server) may trail the run's start (controller) by this much

# what the job runs: submitit pickles `task` and calls it with task_args(point, index) on every task
Task = Callable[..., Any]
TaskArgs = Callable[[Point, int], tuple]
Unwrap = Callable[[Any], "PointOutcome | BaseException"]  # the rank-0 task's return -> its outcome, or what it raised


@dataclass
class Job:
    point: Point
    index: int  # the point's number in the sweep
    job: Any = None  # submitit Job (the rank-0 task is the point's result)
    since: float = 0.0  # time.time() when it was submitted or attached: older rank errors are stale
    outcome: PointOutcome | None = None
    held_state: str | None = None  # the queue state last logged for a job whose rank 0 ended but Slurm holds
    stale_result: tuple[int, int] | None = None  # (inode, mtime ns) of a rank-0 result known to be an earlier run's
    run_start: float | None = None  # start time (Unix s) of the job's run as squeue last showed it
    unknown_since: float | None = None  # when squeue stopped answering about the job
    unknown_warned: float = 0.0  # when the last warning about it was logged


def job_exit_code(outcome: Any, global_rank: int) -> int | None:
    """Inside the job: the exit code a task leaves with instead of returning, or None. An interrupted point
    (SIGTERM) leaves no result: requeued by Slurm it runs again, else (scancel) the sweep reads sacct's end
    state. A failed rank other than 0 exits 1 so srun --kill-on-bad-exit stops the ranks waiting on it."""
    if isinstance(outcome, PointOutcome) and outcome.interrupted:
        return EXIT_INTERRUPTED
    if isinstance(outcome, PointOutcome) and outcome.state == "failed" and global_rank:
        return 1
    return None


def run_points(points: Sequence[Point], folder: str, poll_s: float, task: Task, task_args: TaskArgs,
               unwrap: Unwrap) -> list[PointOutcome]:
    """Submit (or attach to) one job per point, wait for all of them, return their outcomes in order."""
    jobs = [Job(point, i) for i, point in enumerate(points)]
    fresh = [j for j in jobs if not _attach(j)]
    _submit(fresh, folder, task, task_args)
    try:
        _wait(jobs, poll_s, unwrap)
    except KeyboardInterrupt:
        ids = " ".join(j.job.job_id for j in jobs if j.job is not None and j.outcome is None)
        log.warning("interrupted: Slurm jobs %s keep running; run the same command again to wait for "
                    "them and resume, or scancel them", ids)
        raise
    return [j.outcome for j in jobs if j.outcome is not None]


def _attach(j: Job) -> bool:
    """Wait for a job a previous run of this sweep submitted for the point if it still runs or waits."""
    from submitit.slurm.slurm import SlurmJob

    from energybench.util.slurm_queue import QueueUnknown, queue_entry

    status = read_status(j.point.dir) or {}
    job_id, folder = status.get("submitit_job_id"), status.get("submitit_folder")
    if status.get("state") not in ("pending", "running") or not job_id or not folder:
        return False
    try:
        entry = queue_entry(job_id)
    except QueueUnknown as e:  # attaching to a job that has ended is safe; a second job for a live one is not
        log.warning("point %s: %s; waiting for Slurm job %s as if it still ran", j.point.id, e, job_id)
        state = "unknown to squeue"
    else:
        if entry is None:
            return False
        state = entry.state
    j.job = SlurmJob(folder=folder, job_id=job_id, tasks=tuple(range(status.get("submitit_tasks", 1))))
    j.since = time.time()
    log.info("point %s: Slurm job %s from an earlier run is %s; waiting for it", j.point.id, job_id, state)
    return True


def _submit(jobs: list[Job], folder: str, task: Task, task_args: TaskArgs) -> None:
    """One job array per job shape; every group is queued before any is waited on."""
    import submitit

    from energybench.slurm import executor_parameters

    groups: dict[str, list[Job]] = {}
    for j in jobs:
        key = json.dumps([executor_parameters(j.point.cfg), j.point.cfg.cluster.max_requeues], sort_keys=True)
        groups.setdefault(key, []).append(j)
    for key, members in groups.items():
        params, max_requeues = json.loads(key)
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=max_requeues)
        executor.update_parameters(**params)
        try:
            submitted = executor.map_array(task, *zip(*[task_args(j.point, j.index) for j in members]))
        except Exception as e:  # sbatch refused the array: those points fail, the others go on
            for j in members:
                j.outcome = _failed(j, f"sbatch refused the job: {failures.last_line(e)}")
            continue
        tasks = params["nodes"] * params["tasks_per_node"]
        for j, job in zip(members, submitted):
            j.job, j.since = job, time.time()
            mark_pending(j.point.dir, submitit_job_id=job.job_id, submitit_tasks=tasks,
                         submitit_folder=str(Path(folder).expanduser().absolute()))
            log.info("point %s: Slurm job %s (%d task%s): %s", j.point.id, job.job_id, tasks, "s" * (tasks > 1),
                     " ".join(o for o in j.point.overrides if not o.startswith("hydra.")))


# sacct end states of a job that ended by itself (its processes exited); any other final state is Slurm ending it
SELF_ENDED_STATES = ("COMPLETED", "FAILED")
# squeue states of a job that waits to run (again): a rank-0 result seen then is an earlier run's
WAITING_STATES = ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "PREEMPTED", "CONFIGURING")


def _ended(j: Job, unwrap: Unwrap) -> bool:
    """Whether the point's job has ended, so that rank 0's result (or its absence) is the point's.

    A job that Slurm requeued (scontrol requeue, preemption) keeps the first run's rank-0 result while it
    waits to run again: in a multi-node job rank 0 can end `failed` by a requeued peer's SIGTERM before its
    own, while squeue still says RUNNING. So a result counts once squeue no longer lists the job, or, while
    the job is listed, when it is a `done` outcome of the current run (a peer still tearing down must not
    hold up a finished point). A result is an earlier run's (`stale`, which `_collect` ignores unless
    rewritten) when it was seen while the job waited to run again, when a new run of the job has started
    since it was seen, or when it is older than the current run's start. When squeue does not answer, a
    `done` result of this run still counts; anything else waits for sacct's end state (`_ended_unlisted`)."""
    from energybench.util.slurm_queue import QueueUnknown, queue_entry

    if not j.job.task(0).done():
        return False
    result = _result_id(j)
    try:
        entry = queue_entry(j.job.job_id)
    except QueueUnknown as e:
        return _ended_unlisted(j, unwrap, result, e)
    j.unknown_since = None
    if entry is None:
        return True
    if entry.state in WAITING_STATES:
        j.stale_result = result if result is not None else j.stale_result
    else:
        if j.run_start is not None and entry.start_unix_s is not None and entry.start_unix_s != j.run_start \
                and result is not None:
            j.stale_result = result  # a new run started since the last poll: what is there is the last run's
        j.run_start = entry.start_unix_s if entry.start_unix_s is not None else j.run_start
        current = result is not None and result != j.stale_result and (
            entry.start_unix_s is None or result[1] / 1e9 >= entry.start_unix_s - CLOCK_SLACK_S)
        if not current and result is not None and entry.start_unix_s is not None:
            j.stale_result = result  # written before this run started
        if current and _done(j, unwrap):
            return True  # this run's point is done; the job is only finishing its other tasks or its epilog
    if entry.state != j.held_state:
        j.held_state = entry.state
        level = logging.DEBUG if entry.state not in WAITING_STATES else logging.INFO
        log.log(level, "point %s: rank 0 of Slurm job %s ended but the job is %s; waiting for it", j.point.id,
                j.job.job_id, entry.state)
    return False


def _ended_unlisted(j: Job, unwrap: Unwrap, result: tuple[int, int] | None, error: Exception) -> bool:
    """`_ended` while squeue does not answer: a `done` result not known to be stale counts; otherwise, once
    squeue has been silent for QUEUE_UNKNOWN_MAX_S, sacct's end state decides (a final state: ended; none:
    keep waiting, with a warning every QUEUE_UNKNOWN_MAX_S)."""
    from energybench.util.slurm_queue import ALIVE_STATES, end_state

    now = time.time()
    j.unknown_since = j.unknown_since or now
    if result is not None and result != j.stale_result and _done(j, unwrap):
        return True
    if now - j.unknown_since < QUEUE_UNKNOWN_MAX_S or now - j.unknown_warned < QUEUE_UNKNOWN_MAX_S:
        return False
    final = end_state(j.job.job_id)
    if final != "UNKNOWN" and final not in ALIVE_STATES:
        log.warning("point %s: %s for %.0f s; sacct says Slurm job %s ended %s", j.point.id, error,
                    now - j.unknown_since, j.job.job_id, final)
        return True
    j.unknown_warned = now
    log.warning("point %s: %s for %.0f s and sacct says %s; still waiting for Slurm job %s", j.point.id, error,
                now - j.unknown_since, final, j.job.job_id)
    return False


def _done(j: Job, unwrap: Unwrap) -> bool:
    """Whether rank 0's result is a done point (anything unreadable or failed: no)."""
    try:
        outcome = unwrap(j.job.task(0).result())
    except Exception:  # noqa: BLE001 (a failed task, a half-read file: not done)
        return False
    return isinstance(outcome, PointOutcome) and outcome.state == "done"


def _result_id(j: Job) -> tuple[int, int] | None:
    """(inode, mtime in ns) of rank 0's result file, which a new run's result changes; None where there is none."""
    try:
        st = j.job.task(0).paths.result_pickle.stat()
    except (OSError, AttributeError):
        return None
    return st.st_ino, st.st_mtime_ns


def _wait(jobs: list[Job], poll_s: float, unwrap: Unwrap) -> None:
    waiting = [j for j in jobs if j.outcome is None]
    while waiting:
        for j in list(waiting):
            if _ended(j, unwrap):
                j.outcome = _collect(j, unwrap)
                waiting.remove(j)
                log.info("point %s: %s", j.point.id, j.outcome.state)
        if waiting:
            time.sleep(poll_s)


def _collect(j: Job, unwrap: Unwrap) -> PointOutcome:
    """The rank-0 task's outcome, or a failed point built from Slurm's end state."""
    from submitit.core.utils import FailedJobError, UncompletedJobError

    from energybench.util.slurm_queue import ALIVE_STATES, end_state

    try:
        if j.stale_result is not None and _result_id(j) == j.stale_result:
            raise UncompletedJobError(f"Slurm job {j.job.job_id} ran again after a requeue and left no result")
        outcome = unwrap(j.job.task(0).result())
    except (UncompletedJobError, FailedJobError) as e:
        status = read_status(j.point.dir) or {}
        detail = failures.recorded_reason(j.point.dir, status, since_unix_s=j.since - 1) or (
            failures.last_error_line(str(e)) if isinstance(e, FailedJobError) else None)
        return _failed(j, failures.job_ended_reason(j.job.job_id, end_state(j.job.job_id), detail))
    if isinstance(outcome, BaseException):  # the task function raised outside the point
        return _failed(j, failures.error_reason(outcome))
    if outcome.state == "failed" and "timed-out too many times" in (outcome.reason or ""):
        c = j.point.cfg.cluster
        return _failed(j, failures.timed_out_reason(j.job.job_id, c.time_min, c.max_requeues))
    if outcome.state == "failed":
        # Slurm ended the job (scancel, a node's failure, memory, preemption) and rank 0 returned first with what
        # that did to it (a peer's closed connection): the reason names Slurm's end state, then the rank's error
        final = end_state(j.job.job_id)
        if final not in (*SELF_ENDED_STATES, "UNKNOWN") and final not in ALIVE_STATES:
            return _failed(j, failures.job_ended_reason(j.job.job_id, final, outcome.reason))
    return outcome


def _failed(j: Job, reason: str) -> PointOutcome:
    mark_failed(j.point.dir, reason)
    return PointOutcome(j.point.id, "failed", reason)
