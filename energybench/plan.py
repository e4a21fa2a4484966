"""Before anything runs: which points of a sweep go, which are skipped and why."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import yaml

from energybench.config import PointConfig, to_mapping
from energybench.results.layout import point_dir, point_id
from energybench.results.store import read_status, write_status, write_text


@dataclass
class Plan:
    todo: list[tuple[list[str], PointConfig]] = field(default_factory=list)  # (overrides, config) to launch
    skipped: list[tuple[PointConfig, str]] = field(default_factory=list)  # (config, reason)


def preflight(cfg: PointConfig) -> str | None:
    """Why `cfg` cannot run where it is sent, or None. (Shard divisibility is checked at validation.)"""
    return None


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
        pdir = point_dir(cfg)
        write_text(yaml.safe_dump(to_mapping(cfg), sort_keys=False), pdir / "config.yaml")
        write_status(pdir, "pending")
    return plan
