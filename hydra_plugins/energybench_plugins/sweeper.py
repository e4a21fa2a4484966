"""Hydra sweeper of energybench: Hydra's grid expansion, then energybench's checks before launching."""

from __future__ import annotations

import logging
import sys
from typing import Any, List, Tuple

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobStatus, filter_overrides

log = logging.getLogger("energybench.sweep")


class EnergybenchSweeper(BasicSweeper):
    """Validates every point before any is launched (a bad value exits 2 with nothing written), skips
    finished and impossible points, launches the rest, prints a summary and exits 1 if any failed."""

    def sweep(self, arguments: List[str]) -> Any:
        from energybench.plan import plan_sweep

        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        batches = self.split_arguments(parser.parse_overrides([*self._parse_config(), *arguments]), None)
        jobs, invalid = self._validate([list(job) for batch in batches for job in batch])
        _check_slurm_client([cfg for _, cfg in jobs])
        locks = _lock_sweeps([cfg for _, cfg in jobs])
        try:
            try:
                plan = plan_sweep(jobs)
            except OSError as e:  # a full or read-only disk before any point starts
                print(f"error: cannot write {e.filename or 'the sweep directory'}: {e.strerror or e}; free space "
                      "or choose another out_dir", file=sys.stderr)
                sys.exit(2)
            return self._run(plan, invalid)
        finally:
            for lock in locks:
                lock.release()

    def _run(self, plan: Any, invalid: List[Tuple[str, str]]) -> Any:
        assert self.launcher is not None
        skipped = invalid + [(_pid(cfg), why) for cfg, why in plan.skipped]
        for label, why in skipped:
            log.info("skip %s: %s", label, why)
        for cfg, why in plan.interrupted:
            log.warning("point %s was %s; running it again", _pid(cfg), why)
        returns = self.launcher.launch([o for o, _ in plan.todo], initial_job_idx=0) if plan.todo else []
        rows = [_outcome_row(cfg, ret) for (_, cfg), ret in zip(plan.todo, returns)]
        rows += [{"point_id": label, "status": "skipped", "reason": why} for label, why in skipped]
        _record_sacct([cfg for _, cfg in plan.todo])
        _report(rows, plan.interrupted)
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


def _check_slurm_client(configs: List[Any]) -> None:
    """cluster=slurm needs Slurm's client commands here (sbatch submits, squeue/sacct follow the jobs)."""
    import shutil

    slurm = [c for c in configs if c.cluster.launcher == "slurm"]
    missing = [cmd for cmd in ("sbatch", "squeue", "sacct") if slurm and shutil.which(cmd) is None]
    if missing:
        print(f"error: cluster={slurm[0].cluster.name}: {', '.join(missing)} not on PATH (no Slurm client on this "
              "machine); run the sweep on the cluster's login node, or use cluster=local", file=sys.stderr)
        sys.exit(2)


def _lock_sweeps(configs: List[Any]) -> List[Any]:
    """Take the lock of every sweep directory of the grid (one writer per sweep directory) before anything
    is written; exit 2 with the holder and how to proceed if another sweep holds one, or if out_dir cannot
    be written."""
    from energybench.lock import LockError, acquire
    from energybench.results.layout import sweep_dir

    locks: List[Any] = []
    try:
        for directory in sorted({sweep_dir(c).resolve() for c in configs}):
            locks.append(acquire(directory))
    except LockError as e:
        for lock in locks:
            lock.release()
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    return locks


def _pid(cfg: Any) -> str:
    from energybench.results.layout import point_id

    return point_id(cfg)


def _outcome_row(cfg: Any, ret: Any) -> dict:
    if ret.status == JobStatus.COMPLETED and ret.return_value is not None:
        outcome = ret.return_value
        return {**(outcome.row or {}), "point_id": outcome.point_id, "status": outcome.state,
                "reason": outcome.reason}
    reason = f"{type(ret._return_value).__name__}: {ret._return_value}"
    from energybench.results.layout import point_dir
    from energybench.results.store import write_status

    try:
        write_status(point_dir(cfg), "failed", reason)
    except OSError as e:  # a full or read-only disk: the table is still printed, with the reason
        reason += f" (and status.json could not be written: {e.strerror or e})"
    return {"point_id": _pid(cfg), "status": "failed", "reason": reason}


def _record_sacct(configs: list[Any]) -> None:
    """Slurm's own energy figure beside ours, now that the jobs have ended (null with the reason if none)."""
    from energybench.energy.sacct import record
    from energybench.results.layout import point_dir

    for cfg in configs:
        if cfg.cluster.launcher == "slurm":
            record(point_dir(cfg))


def _report(rows: list[dict], interrupted: List[Tuple[Any, str]]) -> None:
    from energybench.results.summary import format_table

    print("\n" + format_table(rows))
    for cfg, why in interrupted:
        print(f"measured again {_pid(cfg)}: it was {why.split('; re-run')[0]}")
    for r in rows:
        if r["status"] == "failed" or (r["status"] == "skipped" and not r["reason"].startswith("already done")):
            print(f"{r['status']} {r['point_id']}: {r.get('reason')}")
    counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "failed", "skipped")}
    print(f"{counts['done']} done, {counts['failed']} failed, {counts['skipped']} skipped")
