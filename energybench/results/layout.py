"""Where a point's files live: <out_dir>/<sweep>/point=<id>/ (hive-style, so one dataset call reads a sweep)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from energybench.config import PointConfig, to_mapping
from energybench.results.store import write_text

# Keys that say where or how a point is dispatched, not what it measures: they stay out of its id,
# so a re-run with another partition or time limit still finds (and resumes) the same points.
_DISPATCH_KEYS = ("out_dir", "sweep", "resume", "compile_cache")
# Factors that turn measured energy into CO2 and money: applied when results are read, never measured.
_ACCOUNTING_KEYS = ("carbon", "cost")
_CLUSTER_KEYS_KEPT = ("name", "gpu_type", "gpus_per_node")  # gpus_per_node sets the job's node layout


def point_id(cfg: PointConfig) -> str:
    """Readable, stable id: the main axes, then a hash of everything that defines the measurement."""
    data = to_mapping(cfg)
    for key in _DISPATCH_KEYS + _ACCOUNTING_KEYS:
        data.pop(key)
    data["cluster"] = {k: data["cluster"][k] for k in _CLUSTER_KEYS_KEPT}
    data["power"].pop("state_dir")  # where the restore file goes
    if cfg.workload == "offline":  # ids of offline points stay what they were before workload=online existed
        data.pop("workload")
        data.pop("online")
    if cfg.dataset.name == "synthetic":  # no text to tokenize: the tokenizer ($ENERGYBENCH_TOKENIZER) is unused
        data["model"].pop("tokenizer")
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:8]
    cap = "none" if cfg.power_cap is None else f"{cfg.power_cap:g}W"
    rate = f"-r{cfg.online.rate:g}" if cfg.workload == "online" else ""
    return (f"{cfg.model.name}-{cfg.dataset.name}-b{cfg.batch}-t{cfg.max_tokens}-s{cfg.shards}"
            f"-p{cap}-{cfg.engine}{rate}-{digest}")


def sweep_dir(cfg: PointConfig) -> Path:
    return Path(cfg.out_dir).expanduser() / cfg.sweep


def point_dir(cfg: PointConfig) -> Path:
    return sweep_dir(cfg) / f"point={point_id(cfg)}"


def write_config(cfg: PointConfig, directory: Path | None = None) -> Path:
    """The point's resolved configuration, <point dir>/config.yaml (written whole); its path. `directory`:
    the point's directory where the caller holds it (a Point), else computed from `cfg`."""
    path = (point_dir(cfg) if directory is None else directory) / "config.yaml"
    write_text(yaml.safe_dump(to_mapping(cfg), sort_keys=False), path)
    return path


@dataclass(frozen=True)
class Point:
    """One point of a sweep, made once by the planner and passed down to the launchers: its config, id and
    directory (computed here once), the Hydra overrides that define it, and the attempts recorded before."""

    cfg: PointConfig
    id: str
    dir: Path
    overrides: tuple[str, ...] = ()  # what a launcher hands to the job that recomposes it (Slurm)
    attempt: int = 0  # attempts status.json recorded when the point was planned (the next run is attempt + 1)

    @classmethod
    def of(cls, cfg: PointConfig, overrides: tuple[str, ...] | list[str] = (), attempt: int = 0) -> "Point":
        pid = point_id(cfg)
        return cls(cfg, pid, sweep_dir(cfg) / f"point={pid}", tuple(overrides), attempt)
