"""TEST FIXTURE: sweeps written as a sweep writes them (run.parquet, batches.parquet, status.json, config.yaml),
with metrics chosen by the test, so that the advice has a known answer.

Each done point gets `batches` measured batches (and one warm-up) whose per-batch J/token, TPOT and TTFT spread
around the chosen values by SPREAD and average exactly to them (when `batches` is a multiple of 4); run.parquet is
aggregated from those batches by energybench.results.metrics.run_metrics, as a real point is.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from energybench.config import DatasetConfig, ModelConfig, PointConfig, to_mapping
from energybench.results.columns import config_columns
from energybench.results.metrics import run_metrics
from energybench.results.schema import BATCHES, RUN, table
from energybench.results.store import write_status

LLAMA_7B = ModelConfig(name="7b", dim=4096, n_layers=32, n_heads=32)
SPREAD = (0.9, 1.1, 0.95, 1.05)  # per-batch factors around the chosen value; mean 1
TOKENS_PER_RESPONSE = 100
GPU_NAME = "NVIDIA H100 80GB HBM3"


@dataclass(frozen=True)
class Spec:
    batch: int
    shards: int
    energy_per_token_j: float | None = None  # None: a failed point (no run.parquet)
    tpot_s: float = 0.02
    tokens_per_s: float = 1000.0
    ttft_s: float = 0.1
    power_cap: float | None = None
    engine: str = "reference"
    batches: int = len(SPREAD)
    status: str = "done"  # or failed, running (killed), skipped
    reason: str | None = None
    model: ModelConfig = LLAMA_7B


def config(spec: Spec, sweep: str, out_dir: Path) -> PointConfig:
    return PointConfig(model=spec.model, dataset=DatasetConfig(name="synthetic", like="alpaca"), batch=spec.batch,
                       shards=spec.shards, power_cap=spec.power_cap, engine=spec.engine,
                       samples=spec.batch * spec.batches, sweep=sweep, out_dir=str(out_dir))


def _batches(spec: Spec, point: str) -> list[dict]:
    t0 = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
    rows = []
    for i in range(spec.batches + 1):  # batch 0 is the warm-up
        spread = i and spec.batches % len(SPREAD) == 0  # other counts: every batch measures the chosen value
        f = SPREAD[(i - 1) % len(SPREAD)] if spread else 1.0
        tokens = spec.batch * TOKENS_PER_RESPONSE
        duration = tokens / spec.tokens_per_s
        rows.append({"point_id": point, "batch_index": i, "warmup": i == 0, "attempt": 1,
                     "started_at": t0 + dt.timedelta(seconds=10 * i), "responses": spec.batch,
                     "prompt_tokens": 50 * spec.batch, "max_prompt_tokens": 60, "tokens": tokens,
                     "wasted_tokens": 0, "eos_stops": 0, "steps": TOKENS_PER_RESPONSE, "prefill_steps": 1,
                     "prefill_s": spec.ttft_s * f, "decode_s": duration - spec.ttft_s * f, "duration_s": duration,
                     "ttft_s": spec.ttft_s * f, "tpot_s": spec.tpot_s * (2 - f), "tokens_per_s": tokens / duration,
                     "energy_j": spec.energy_per_token_j * f * tokens if spec.energy_per_token_j else None,
                     "prefill_energy_j": None, "decode_energy_j": None, "step_times_s": []})
    return rows


def write_point(spec: Spec, out_dir: Path, sweep: str = "synthetic") -> Path:
    """One point directory as the sweep leaves it; returns it."""
    cfg = config(spec, sweep, out_dir)
    cols = config_columns(cfg)
    d = out_dir / sweep / f"point={cols['point_id']}"
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump(to_mapping(cfg), sort_keys=False))
    write_status(d, "running", host="vm")
    if spec.status != "done":
        if spec.status == "running":  # killed after its first measured batch
            pq.write_table(table(_batches(spec, cols["point_id"])[:2], BATCHES), d / "batches.parquet")
        write_status(d, spec.status, spec.reason)
        return d
    rows = _batches(spec, cols["point_id"])
    measured = [b for b in rows if not b["warmup"]]
    energy = sum(b["energy_j"] for b in measured) if spec.energy_per_token_j else None
    run = {**cols, **run_metrics(measured, sum(b["duration_s"] for b in measured), energy, None),
           "status": "done", "gpu_name": GPU_NAME, "gpus": spec.shards, "nodes": 1, "dtype": "float16",
           "device": "cuda", "attempt": 1}
    pq.write_table(table(rows, BATCHES), d / "batches.parquet")
    pq.write_table(table([run], RUN), d / "run.parquet")
    write_status(d, "done")
    return d


def write_sweep(specs: list[Spec], out_dir: Path, sweep: str = "synthetic") -> Path:
    for spec in specs:
        write_point(spec, out_dir, sweep)
    return out_dir / sweep
