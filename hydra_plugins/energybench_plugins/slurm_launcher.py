"""Hydra launcher of energybench on Slurm: one submitit job per point, sized from that point's config.

Hydra's submitit launcher asks for one job shape for the whole sweep; a grid over `shards` needs a
shape per point (nodes = ceil(shards / gpus_per_node), tasks per node = min(shards, gpus_per_node),
one GPU per task). This launcher groups the points by shape, submits every group as a job array
before waiting on any, and turns a job that ended without a result (scancel, node failure, OOM kill,
time limit out of requeues, refused by sbatch) into a failed point with its reason.
"""

# no `from __future__ import annotations`: Hydra imports plugins without registering them in
# sys.modules, where dataclasses cannot resolve string annotations
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher

log = logging.getLogger("energybench.slurm")

EXIT_INTERRUPTED = 143  # 128 + SIGTERM, as a shell reports a job killed by it


@dataclass
class _Point:
    idx: int  # Hydra job number
    overrides: List[str]
    cfg: Any  # energybench.config.PointConfig
    job: Any = None  # submitit Job (the rank-0 task is the point's result)
    since: float = 0.0  # time.time() when it was submitted or attached: older rank errors are stale
    outcome: Optional[JobReturn] = None


class EnergybenchSlurmLauncher(BaseSubmititLauncher):
    _EXECUTOR = "slurm"

    def __init__(self, submitit_folder: str, poll_s: float = 2.0) -> None:
        super().__init__(submitit_folder=submitit_folder, poll_s=poll_s)

    # ---- in the job, on every task ----
    def __call__(self, sweep_overrides: List[str], job_dir_key: str, job_num: int, job_id: str,
                 singleton_state: Any) -> JobReturn:
        import submitit

        from energybench.point import PointOutcome

        ret = super().__call__(sweep_overrides, job_dir_key, job_num, job_id, singleton_state)
        outcome = ret._return_value
        if isinstance(outcome, PointOutcome) and outcome.interrupted:
            # No result file: if Slurm requeues the job (preemption, scontrol requeue, submitit at the
            # time limit) the point runs again; if not (scancel), the sweep reads the end state from sacct.
            raise SystemExit(EXIT_INTERRUPTED)
        if isinstance(outcome, PointOutcome) and outcome.state == "failed" and submitit.JobEnvironment().global_rank:
            raise SystemExit(1)  # srun --kill-on-bad-exit stops the ranks waiting on this one
        return ret

    # ---- in the sweep ----
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from energybench.confload import to_point_config

        assert self.config is not None and self.hydra_context is not None
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        points = []
        for idx, overrides in enumerate(job_overrides, initial_job_idx):
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            points.append(_Point(idx, list(overrides), to_point_config(sweep_config)))
        fresh = [p for p in points if not self._attach(p)]
        self._submit(fresh)
        try:
            self._wait(points)
        except KeyboardInterrupt:
            ids = " ".join(p.job.job_id for p in points if p.job is not None and p.outcome is None)
            log.warning("interrupted: Slurm jobs %s keep running; run the same command again to wait for "
                        "them and resume, or scancel them", ids)
            raise
        return [p.outcome for p in points]

    def _attach(self, p: _Point) -> bool:
        """Wait for a job a previous run of this sweep submitted for `p` if it still runs or waits."""
        from submitit.slurm.slurm import SlurmJob

        from energybench.results.layout import point_dir
        from energybench.results.store import read_status
        from energybench.slurm import live_state

        status = read_status(point_dir(p.cfg)) or {}
        job_id, folder = status.get("submitit_job_id"), status.get("submitit_folder")
        if status.get("state") not in ("pending", "running") or not job_id or not folder:
            return False
        state = live_state(job_id)
        if state is None:
            return False
        p.job = SlurmJob(folder=folder, job_id=job_id, tasks=tuple(range(status.get("submitit_tasks", 1))))
        p.since = time.time()
        log.info("point %s: Slurm job %s from an earlier run is %s; waiting for it", _pid(p), job_id, state)
        return True

    def _submit(self, points: List[_Point]) -> None:
        """One job array per job shape; every group is queued before any is waited on."""
        import submitit

        from energybench.slurm import executor_parameters

        groups: dict = {}
        for p in points:
            key = json.dumps([executor_parameters(p.cfg), p.cfg.cluster.max_requeues], sort_keys=True)
            groups.setdefault(key, []).append(p)
        for key, members in groups.items():
            params, max_requeues = json.loads(key)
            executor = submitit.AutoExecutor(folder=self.params["submitit_folder"], cluster="slurm",
                                             slurm_max_num_timeout=max_requeues)
            executor.update_parameters(**params)
            args = [(p.overrides, "hydra.sweep.dir", p.idx, f"job_id_for_{p.idx}", Singleton.get_state())
                    for p in members]
            try:
                jobs = executor.map_array(self, *zip(*args))
            except Exception as e:  # sbatch refused the array: those points fail, the others go on
                for p in members:
                    p.outcome = _failed(p, f"sbatch refused the job: {_last_line(e)}")
                continue
            tasks = params["nodes"] * params["tasks_per_node"]
            for p, job in zip(members, jobs):
                p.job = job
                self._record_submission(p, job, tasks)

    def _record_submission(self, p: _Point, job: Any, tasks: int) -> None:
        from energybench.results.layout import point_dir
        from energybench.results.store import write_status

        p.since = time.time()
        folder = str(Path(self.params["submitit_folder"]).expanduser().absolute())
        write_status(point_dir(p.cfg), "pending", submitit_job_id=job.job_id, submitit_folder=folder,
                     submitit_tasks=tasks)
        log.info("point %s: Slurm job %s (%d task%s): %s", _pid(p), job.job_id, tasks, "s" * (tasks > 1),
                 " ".join(filter_overrides(p.overrides)))

    def _wait(self, points: List[_Point]) -> None:
        waiting = [p for p in points if p.outcome is None]
        while waiting:
            for p in list(waiting):
                if p.job.task(0).done():
                    p.outcome = self._collect(p)
                    waiting.remove(p)
                    log.info("point %s: %s", _pid(p), p.outcome._return_value.state
                             if p.outcome.status == JobStatus.COMPLETED else "failed")
            if waiting:
                time.sleep(self.params["poll_s"])

    def _collect(self, p: _Point) -> JobReturn:
        """The rank-0 task's JobReturn, or a failed point built from Slurm's end state."""
        from submitit.core.utils import FailedJobError, UncompletedJobError

        from energybench.point import PointOutcome

        try:
            ret = p.job.task(0).result()
            outcome = ret._return_value
            if isinstance(outcome, PointOutcome) and "timed-out too many times" in (outcome.reason or ""):
                c = p.cfg.cluster
                return _failed(p, f"Slurm job {p.job.job_id} reached its time limit (cluster.time_min={c.time_min}) "
                                  f"{c.max_requeues + 1} times (cluster.max_requeues={c.max_requeues}); "
                                  "raise cluster.time_min")
            return ret
        except (UncompletedJobError, FailedJobError) as e:
            from energybench.slurm import end_state

            state = end_state(p.job.job_id)
            detail = _point_reason(p) or (_last_error_line(str(e)) if isinstance(e, FailedJobError) else None)
            return _failed(p, f"Slurm job {p.job.job_id} ended {state}" + (f": {detail}" if detail else ""))


def _failed(p: _Point, reason: str) -> JobReturn:
    from energybench.point import PointOutcome
    from energybench.results.layout import point_dir
    from energybench.results.store import write_status

    write_status(point_dir(p.cfg), "failed", reason)
    ret = JobReturn(overrides=p.overrides, status=JobStatus.COMPLETED)
    ret.return_value = PointOutcome(_pid(p), "failed", reason)
    return ret


def _point_reason(p: _Point) -> str | None:
    """What the point itself recorded: the first failing rank's error, else its status reason."""
    from energybench.point import first_error, rank_errors
    from energybench.results.layout import point_dir
    from energybench.results.store import read_status

    pdir = point_dir(p.cfg)
    reason = first_error(rank_errors(pdir, since_unix_s=p.since - 1))
    if reason:
        return reason
    status = read_status(pdir) or {}
    if status.get("state") == "failed" and status.get("reason"):
        return str(status["reason"])
    if status.get("state") == "running":
        return f"the point was running (attempt {status.get('attempt')}) when the job ended"
    return None


def _pid(p: _Point) -> str:
    from energybench.results.layout import point_id

    return point_id(p.cfg)


def _last_line(e: BaseException) -> str:
    """The last non-blank line of an error (sbatch's own message ends submitit's)."""
    lines = [line for line in str(e).splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(e).__name__


def _last_error_line(trace: str) -> str | None:
    lines = [line.strip() for line in trace.splitlines() if line.strip() and not set(line.strip()) <= {"-"}]
    errors = [line for line in lines if "Error" in line.split(":")[0] or "Exception" in line.split(":")[0]]
    return errors[-1] if errors else None
