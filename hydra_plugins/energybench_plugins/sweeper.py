"""Hydra sweeper of energybench: Hydra's grid expansion, then energybench's checks, plan and launch.

A thin adapter: the grid comes from Hydra's basic sweeper, validation from energybench.confload,
the plan (resume, pre-flight, pending) from energybench.plan, the steps around the launch from
energybench.dispatch.sweep; the launcher chosen by `cluster` runs the planned points.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, List, Tuple

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import filter_overrides

from hydra_plugins.energybench_plugins.jobs import outcome

log = logging.getLogger("energybench.sweep")


class EnergybenchSweeper(BasicSweeper):
    """Validates every point before any is launched (a bad value exits 2 with nothing written), skips
    finished and impossible points, launches the rest, prints a summary and exits 1 if any failed."""

    def sweep(self, arguments: List[str]) -> Any:
        from energybench.dispatch.sweep import check_slurm_client, lock_sweeps
        from energybench.plan import plan_sweep
        from energybench.results.layout import Point

        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        batches = self.split_arguments(parser.parse_overrides([*self._parse_config(), *arguments]), None)
        jobs, invalid = self._validate([list(job) for batch in batches for job in batch])
        points = [Point.of(cfg, overrides) for overrides, cfg in jobs]  # each point's id and directory, once
        check_slurm_client(points)
        locks = lock_sweeps(points)
        try:
            try:
                plan = plan_sweep(points)
            except OSError as e:  # a full or read-only disk before any point starts
                print(f"error: cannot write {e.filename or 'the sweep directory'}: {e.strerror or e}; free space "
                      "or choose another out_dir", file=sys.stderr)
                sys.exit(2)
            return self._run(plan, invalid)
        finally:
            for lock in locks:
                lock.release()

    def _run(self, plan: Any, invalid: List[Tuple[str, str]]) -> Any:
        from energybench.dispatch.sweep import outcome_row, record_sacct, report

        assert self.launcher is not None
        skipped = invalid + [(point.id, why) for point, why in plan.skipped]
        for label, why in skipped:
            log.info("skip %s: %s", label, why)
        for point, why in plan.interrupted:
            log.warning("point %s was %s; running it again", point.id, why)
        if hasattr(self.launcher, "points"):  # energybench's own launcher takes the planned points as they are
            self.launcher.points = plan.todo
        returns = self.launcher.launch([list(p.overrides) for p in plan.todo], initial_job_idx=0) if plan.todo else []
        rows = [outcome_row(point, outcome(ret)) for point, ret in zip(plan.todo, returns)]
        rows += [{"point_id": label, "status": "skipped", "reason": why} for label, why in skipped]
        record_sacct(plan.todo)
        report(rows, plan.interrupted)
        if any(r["status"] == "failed" for r in rows):
            sys.exit(1)
        return [returns]

    def _validate(self, jobs: List[List[str]]) -> Tuple[List[Tuple[List[str], Any]], List[Tuple[str, str]]]:
        """(overrides, PointConfig) of every valid point and (label, reason) of points whose shards do not
        split their model; any other bad value, or no valid point at all, exits 2 with its message."""
        from energybench.config import ConfigError, ShardsError
        from energybench.confload import to_point_config
        from energybench.device.cards import known_cards

        assert self.hydra_context is not None and self.config is not None
        valid, invalid = [], []
        try:
            known_cards()  # a site cards file ($ENERGYBENCH_CARDS) that does not read is a bad input too
            for job in jobs:
                try:
                    valid.append((job, to_point_config(self.hydra_context.config_loader.load_sweep_config(
                        self.config, job))))
                except ShardsError as e:
                    invalid.append((" ".join(filter_overrides(job)) or "point", str(e)))
                    if len(invalid) == len(jobs):
                        raise
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        return valid, invalid

