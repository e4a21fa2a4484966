"""Run a point on this machine: in this process for one shard, one child process per shard otherwise."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from energybench.config import PointConfig
from energybench.distributed import free_port
from energybench.point import PointOutcome, Terminated, first_error, rank_errors, run_point, signals_raise
from energybench.results.layout import point_dir, point_id, write_config
from energybench.results.store import read_status, write_status
from energybench.threads import usable_cpus


def run_local(cfg: PointConfig) -> PointOutcome:
    if cfg.shards == 1:
        return run_point(cfg)
    return run_ranks(cfg)


def run_ranks(cfg: PointConfig, grace_s: float = 10.0) -> PointOutcome:
    """Start `cfg.shards` processes of `python -m energybench.point` and wait for all of them.

    If one fails, the others are stopped (SIGTERM, then SIGKILL after `grace_s`) and the point is
    marked failed with the first failing rank's reason.
    """
    pdir = point_dir(cfg)
    config_path = write_config(cfg)
    shutil.rmtree(pdir / "errors", ignore_errors=True)  # an earlier attempt's errors would name the wrong cause
    port = free_port()
    procs = []
    for rank in range(cfg.shards):
        env = {
            **os.environ,
            "RANK": str(rank), "WORLD_SIZE": str(cfg.shards), "LOCAL_RANK": str(rank),
            "LOCAL_WORLD_SIZE": str(cfg.shards), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(max(1, usable_cpus() // cfg.shards))),
            "ENERGYBENCH_PARENT_PID": str(os.getpid()),  # the rank dies with this process (energybench.lifeline)
            "NCCL_NVLS_ENABLE": os.environ.get("NCCL_NVLS_ENABLE", "0"),
        }
        procs.append(subprocess.Popen([sys.executable, "-m", "energybench.lifeline", "--config", str(config_path)],
                                      env=env))
    try:
        with signals_raise():  # SIGTERM to this process alone (not its group) must reach the ranks too
            failed_rank = _wait_all(procs, grace_s)
    except Terminated as e:  # the ranks were stopped: each recorded what it could and restored its limits
        reason = f"Terminated: {e}"
        if (read_status(pdir) or {}).get("state") != "failed":
            write_status(pdir, "failed", reason)
        return PointOutcome(point_id(cfg), "failed", reason, interrupted=True)
    status = read_status(pdir) or {}
    if failed_rank is None and status.get("state") == "done":
        return PointOutcome(point_id(cfg), "done", None, _run_row(pdir))
    errors = rank_errors(pdir)  # this attempt's: the directory was cleared before the ranks started
    if failed_rank not in (None, 0) and failed_rank not in errors:  # it died without a word (OOM killer, ...)
        reason = f"rank {failed_rank} exited with code {procs[failed_rank].returncode}"
    elif errors:
        reason = first_error(errors)
    elif status.get("state") == "failed" and status.get("reason"):
        reason = status["reason"]
    else:
        reason = f"rank 0 exited with code {procs[0].returncode}"
    if status.get("state") != "failed" or status.get("reason") != reason:
        write_status(pdir, "failed", reason)
    return PointOutcome(point_id(cfg), "failed", reason)


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
