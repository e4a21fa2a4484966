"""Hydra launcher of energybench on Slurm: a thin adapter over energybench.dispatch.slurm.

Hydra's submitit launcher asks for one job shape for the whole sweep; a grid over `shards` needs a
shape per point, so the dispatcher sizes one job per point from its own config. This class is what
submitit pickles into each job (Hydra's task function runs the point there) and what the sweeper
hands the planned points to.
"""

# no `from __future__ import annotations`: Hydra imports plugins without registering them in
# sys.modules, where dataclasses cannot resolve string annotations
import logging
from pathlib import Path
from typing import Any, List, Optional, Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.energybench_plugins.jobs import outcome
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher

log = logging.getLogger("energybench.slurm")


class EnergybenchSlurmLauncher(BaseSubmititLauncher):
    _EXECUTOR = "slurm"

    def __init__(self, submitit_folder: str, poll_s: float = 2.0) -> None:
        super().__init__(submitit_folder=submitit_folder, poll_s=poll_s)
        self.points: Optional[List[Any]] = None  # energybench Points planned by the sweeper for this launch

    # ---- in the job, on every task ----
    def __call__(self, sweep_overrides: List[str], job_dir_key: str, job_num: int, job_id: str,
                 singleton_state: Any) -> JobReturn:
        import submitit

        from energybench.dispatch.slurm import job_exit_code

        ret = super().__call__(sweep_overrides, job_dir_key, job_num, job_id, singleton_state)
        code = job_exit_code(ret._return_value, submitit.JobEnvironment().global_rank)
        if code is not None:
            raise SystemExit(code)
        return ret

    # ---- in the sweep ----
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from energybench.confload import to_point_config
        from energybench.dispatch.slurm import run_points
        from energybench.results.layout import Point

        assert self.config is not None and self.hydra_context is not None
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        points = self.points
        if points is None:  # launched by another sweeper: compose each point here
            load = self.hydra_context.config_loader.load_sweep_config
            points = [Point.of(to_point_config(load(self.config, list(o))), o) for o in job_overrides]
        first = initial_job_idx

        def task_args(point: Any, index: int) -> tuple:
            idx = first + index
            return (list(point.overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state())

        outcomes = run_points(points, self.params["submitit_folder"], self.params["poll_s"], self, task_args,
                              outcome)
        return [_job_return(p.overrides, o) for p, o in zip(points, outcomes)]


def _job_return(overrides: Sequence[str], outcome: Any) -> JobReturn:
    ret = JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED)
    ret.return_value = outcome
    return ret
