"""Before anything runs: which points of a sweep go, which are skipped and why."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from energybench.config import PointConfig
from energybench.results.layout import point_dir, point_id, write_config
from energybench.results.store import read_status, write_status


@dataclass
class Plan:
    todo: list[tuple[list[str], PointConfig]] = field(default_factory=list)  # (overrides, config) to launch
    skipped: list[tuple[PointConfig, str]] = field(default_factory=list)  # (config, reason)


def preflight(cfg: PointConfig) -> str | None:
    """Why `cfg` cannot run where it is sent, or None: a Slurm job shape that does not fill whole
    nodes, or weights + KV cache larger than `shards` GPUs of the preset's memory (energybench.memory).
    (Shards that do not divide the head count are refused when the point is validated.)"""
    from energybench.memory import gpu_memory_gib, memory_problem

    if cfg.cluster.launcher == "slurm":
        from energybench.slurm import shape_problem

        why = shape_problem(cfg)
        if why is not None:
            return why
    return memory_problem(cfg, gpu_memory_gib(cfg.cluster) or _local_gpu_gib(cfg))


def _local_gpu_gib(cfg: PointConfig) -> float | None:
    """Memory of this machine's first GPU for points run here without a GPU type; None without CUDA."""
    if cfg.cluster.launcher != "local" or cfg.device == "cpu":
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(0).total_memory / 2**30


def plan_sweep(jobs: Sequence[tuple[list[str], PointConfig]]) -> Plan:
    """Drop duplicates, points already done (when resuming) and points that fail pre-flight; mark the
    rest pending on disk so partial sweeps show what was queued."""
    plan = Plan()
    seen: set[str] = set()
    for overrides, cfg in jobs:
        pid = point_id(cfg)
        if pid in seen:
            continue
        seen.add(pid)
        status = read_status(point_dir(cfg))
        if cfg.resume and status and status["state"] == "done":
            plan.skipped.append((cfg, "already done (resume=true; resume=false re-runs it)"))
            continue
        why = preflight(cfg)
        if why is not None:
            plan.skipped.append((cfg, why))
            continue
        plan.todo.append((list(overrides), cfg))
    for _, cfg in plan.todo:
        write_config(cfg)
        write_status(point_dir(cfg), "pending")
    return plan
