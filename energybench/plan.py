"""Before anything runs: which points of a sweep go, which are skipped and why."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Sequence

from energybench.config import PointConfig
from energybench.results import owner as owners
from energybench.results.layout import Point, write_config
from energybench.results.status import broken_files, interrupted_reason, mark_pending
from energybench.results.store import read_status

log = logging.getLogger("energybench.plan")


@dataclass
class Plan:
    todo: list[Point] = field(default_factory=list)  # to launch, in grid order
    skipped: list[tuple[Point, str]] = field(default_factory=list)  # (point, reason)
    interrupted: list[tuple[Point, str]] = field(default_factory=list)  # in todo: why its last run is void


def preflight(cfg: PointConfig) -> str | None:
    """Why `cfg` cannot run where it is sent, or None: a Slurm job shape that does not fill whole
    nodes, or weights + KV cache larger than `shards` GPUs of the preset's memory, or than this machine's
    memory for points run here on the CPU (energybench.memory).
    (Shards that do not divide the head count are refused when the point is validated.)"""
    from energybench.memory import gpu_memory_gib, host_memory_problem, memory_problem

    if cfg.cluster.launcher == "slurm":
        from energybench.slurm import shape_problem

        why = shape_problem(cfg)
        if why is not None:
            return why
    stated = gpu_memory_gib(cfg.cluster)  # the GPUs the preset names, wherever the sweep itself runs
    if stated is None and _runs_on_local_cpu(cfg):
        return host_memory_problem(cfg)
    return memory_problem(cfg, stated or _local_gpu_gib(cfg))


def _runs_on_local_cpu(cfg: PointConfig) -> bool:
    if cfg.cluster.launcher != "local" or cfg.device == "cuda":
        return False
    if cfg.device == "cpu":
        return True
    import torch

    return not torch.cuda.is_available()


def _local_gpu_gib(cfg: PointConfig) -> float | None:
    """Memory of this machine's first GPU for points run here without a GPU type; None without CUDA."""
    if cfg.cluster.launcher != "local" or cfg.device == "cpu":
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(0).total_memory / 2**30


def resume_reason(point: Point, status: dict | None) -> str | None:
    """Why the point must not be launched now: done (and its files read back), or still being run by a
    live process (never started twice); None if it goes."""
    if not status:
        return None
    cfg, pdir = point.cfg, point.dir
    if status.get("state") == "done" and cfg.resume:
        broken = broken_files(pdir)
        if not broken:
            return "already done (resume=true; resume=false re-runs it)"
        log.warning("point %s is done but %s does not read back (%s); measuring it again", point.id,
                    broken[0][0], broken[0][1])
        return None
    if status.get("state") != "running" or "owner" not in status:
        return None  # written before owners were recorded: as before, it runs again
    if cfg.cluster.launcher == "slurm" and status.get("submitit_job_id"):
        return None  # the Slurm launcher waits for that job instead of submitting another (its _attach)
    alive = owners.alive(status["owner"])
    if alive:
        return (f"still running in {owners.describe(status['owner'])} (attempt {status.get('attempt')}); "
                "a point is never started twice: wait for it, or stop that process")
    if alive is None:
        return (f"status running in {owners.describe(status['owner'])}, which this host cannot check; once "
                f"that process has ended, delete {pdir / 'status.json'} (or run the sweep from that host)")
    return None


def plan_sweep(points: Sequence[Point]) -> Plan:
    """Drop duplicates, points already done (when resuming), points still run by a live process and points
    that fail pre-flight; mark the rest pending on disk so partial sweeps show what was queued."""
    plan = Plan()
    seen: set[str] = set()
    attached: set[str] = set()  # running in a Slurm job the launcher waits for: its status stays running
    for point in points:
        cfg = point.cfg
        if point.id in seen:
            continue
        seen.add(point.id)
        status = read_status(point.dir)
        why = resume_reason(point, status) or preflight(cfg)
        if why is not None:
            plan.skipped.append((point, why))
            continue
        if (status or {}).get("state") == "running" and cfg.cluster.launcher == "slurm" \
                and status.get("submitit_job_id") and "owner" in status:
            attached.add(point.id)
        void = interrupted_reason(status) if status else None
        if void is not None:
            plan.interrupted.append((point, void))
        plan.todo.append(replace(point, attempt=int((status or {}).get("attempt", 0))))
    for point in plan.todo:
        write_config(point.cfg, point.dir)
        if point.id not in attached:  # pending -> running again would lose a live job's result (done needs running)
            mark_pending(point.dir)
    return plan
