"""Run points on this machine, one after another: in this process for one shard, one child process per
shard otherwise. The same interface as energybench.dispatch.slurm: run these points, return their outcomes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from energybench.config import PointConfig
from energybench.distributed import free_port
from energybench.jobenv import rank_environ
from energybench.point import Terminated, run_point, signals_raise
from energybench.results.failures import local_reason
from energybench.results.layout import Point, write_config
from energybench.results.status import FAILED, PointOutcome, mark_failed
from energybench.results.store import read_status


def run_points(points: Sequence[Point], run: Callable[[Point], Any] | None = None) -> list[Any]:
    """Run `points` in order and return their outcomes; a point stopped by SIGTERM/SIGINT stops the rest (they
    stay pending; `stop_if_interrupted` then ends the sweep). `run`: how one point runs (default run_local; the
    Hydra launcher wraps it in Hydra's job context), returning its PointOutcome or the exception it raised."""
    outcomes: list[Any] = []
    for point in points:
        outcomes.append((run or run_local)(point))
        if isinstance(outcomes[-1], PointOutcome) and outcomes[-1].interrupted:
            break
    return outcomes


def stop_if_interrupted(outcome: Any) -> Any:
    """Ctrl-C or SIGTERM stopped the point in this process: stop the sweep too rather than start the next point
    (the point is recorded as failed, the others stay pending; the same command resumes). `outcome`: a
    PointOutcome, or the exception a run raised outside the point (which does not stop the sweep)."""
    if isinstance(outcome, PointOutcome) and outcome.interrupted:
        print(f"error: {outcome.point_id}: {outcome.reason}; the sweep stops here (run the same command again to "
              "resume it)", file=sys.stderr)
        sys.exit(130 if "SIGINT" in (outcome.reason or "") else 143)
    return outcome


def run_local(point: Point | PointConfig) -> PointOutcome:
    """Run one point here: in this process for one shard, else one process per shard."""
    point = point if isinstance(point, Point) else Point.of(point)
    if point.cfg.shards == 1:
        return run_point(point)
    return run_ranks(point)


def run_ranks(point: Point | PointConfig, grace_s: float = 10.0) -> PointOutcome:
    """Start `shards` processes of `python -m energybench.lifeline` (a rank that dies with this process) and
    wait for all of them.

    If one fails, the others are stopped (SIGTERM, then SIGKILL after `grace_s`) and the point is
    marked failed with the first failing rank's reason.
    """
    point = point if isinstance(point, Point) else Point.of(point)
    cfg, pdir = point.cfg, point.dir
    config_path = write_config(cfg, pdir)
    shutil.rmtree(pdir / "errors", ignore_errors=True)  # an earlier attempt's errors would name the wrong cause
    port = free_port()
    procs = []
    for rank in range(cfg.shards):
        env = {
            **os.environ, **rank_environ(cfg.shards),  # threads, NCCL (energybench.jobenv)
            "RANK": str(rank), "WORLD_SIZE": str(cfg.shards), "LOCAL_RANK": str(rank),
            "LOCAL_WORLD_SIZE": str(cfg.shards), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
            "ENERGYBENCH_PARENT_PID": str(os.getpid()),  # the rank dies with this process (energybench.lifeline)
        }
        procs.append(subprocess.Popen([sys.executable, "-m", "energybench.lifeline", "--config", str(config_path)],
                                      env=env))
    try:
        with signals_raise():  # SIGTERM to this process alone (not its group) must reach the ranks too
            failed_rank = _wait_all(procs, grace_s)
    except Terminated as e:  # the ranks were stopped: each recorded what it could and restored its limits
        reason = f"Terminated: {e}"
        if (read_status(pdir) or {}).get("state") != FAILED:  # a rank's own reason stands
            mark_failed(pdir, reason)
        return PointOutcome(point.id, "failed", reason, interrupted=True)
    status = read_status(pdir) or {}
    if failed_rank is None and status.get("state") == "done":
        return PointOutcome(point.id, "done", None, _run_row(pdir))
    reason = local_reason(pdir, failed_rank, [p.returncode for p in procs], status)
    mark_failed(pdir, reason)
    return PointOutcome(point.id, "failed", reason)


def _wait_all(procs: list[subprocess.Popen], grace_s: float) -> int | None:
    """Wait for every rank; on the first failure stop the rest. Returns the first failed rank, or None."""
    failed: int | None = None
    try:
        while any(p.poll() is None for p in procs):
            for rank, p in enumerate(procs):
                if p.poll() not in (None, 0) and failed is None:
                    failed = rank
                    _stop(procs, grace_s)
            time.sleep(0.1)
    except BaseException:
        _stop(procs, grace_s)
        raise
    if failed is None:
        failed = next((r for r, p in enumerate(procs) if p.returncode != 0), None)
    return failed


def _stop(procs: list[subprocess.Popen], grace_s: float) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _run_row(pdir: Path) -> dict | None:
    import pyarrow.parquet as pq

    rows = pq.read_table(pdir / "run.parquet").to_pylist()
    return rows[0] if rows else None
