"""Hydra launcher of energybench on this machine: a thin adapter over energybench.dispatch.local.

Each planned Point runs inside Hydra's per-job set-up (its job config, job logging, job folder under
`_hydra/`), as Hydra's basic launcher does, but the point is the one the sweeper planned, not recomposed,
and a point stopped by Ctrl-C or SIGTERM stops the sweep (exit 130 / 143; the points not run stay pending).
"""

# no `from __future__ import annotations`: Hydra imports plugins without registering them in
# sys.modules, where dataclasses cannot resolve string annotations
import logging
from pathlib import Path
from typing import Any, List, Optional, Sequence

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from omegaconf import open_dict

from hydra_plugins.energybench_plugins.jobs import outcome

log = logging.getLogger(__name__)


class EnergybenchLocalLauncher(BasicLauncher):
    def __init__(self) -> None:
        super().__init__()
        self.points: Optional[List[Any]] = None  # energybench Points planned by the sweeper for this launch

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from energybench.confload import to_point_config
        from energybench.dispatch.local import run_local, run_points, stop_if_interrupted
        from energybench.results.layout import Point

        setup_globals()
        assert self.hydra_context is not None and self.config is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        load = self.hydra_context.config_loader.load_sweep_config
        points = self.points
        if points is None:  # launched by another sweeper: compose each point here
            points = [Point.of(to_point_config(load(self.config, list(o))), o) for o in job_overrides]
        returns: List[JobReturn] = []
        log.info(f"Launching {len(points)} jobs locally")  # as Hydra's basic launcher

        def run_one(point: Any) -> Any:
            """One point in Hydra's job context; its outcome, or what the run raised."""
            idx = initial_job_idx + len(returns)
            log.info(f"\t#{idx} : {' '.join(filter_overrides(point.overrides))}")
            sweep_config = load(self.config, list(point.overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = idx
                sweep_config.hydra.job.num = idx
            ret = run_job(hydra_context=self.hydra_context, task_function=lambda _: run_local(point),
                          config=sweep_config, job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
            returns.append(ret)
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
            return outcome(ret)

        outcomes = run_points(points, run_one)
        if outcomes:
            stop_if_interrupted(outcomes[-1])
        return returns
