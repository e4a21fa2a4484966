"""The configuration columns every point row carries, taken from its PointConfig."""

from __future__ import annotations

from energybench.config import PointConfig
from energybench.results.layout import point_id


def config_columns(cfg: PointConfig) -> dict:
    return {
        "sweep": cfg.sweep,
        "point_id": point_id(cfg),
        "model": cfg.model.name,
        "dataset": cfg.dataset.name if cfg.dataset.name != "synthetic" else f"synthetic-{cfg.dataset.like}",
        "batch": cfg.batch,
        "max_tokens": cfg.max_tokens,
        "shards": cfg.shards,
        "power_cap_w": cfg.power_cap,
        "samples": cfg.samples if cfg.workload == "offline" else None,  # online: one prompt per request
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "seed": cfg.seed,
        "engine": cfg.engine,
        "length": cfg.length,
        "weights": cfg.model.weights,
        "cluster": cfg.cluster.name,
        "workload": cfg.workload,
        **({"rate_rps": cfg.online.rate, "burstiness": cfg.online.burstiness} if cfg.workload == "online" else {}),
    }
