"""Parquet schemas of a point's tables. Units live in column names; a null means "not measured", never 0."""

from __future__ import annotations

import pyarrow as pa

STR, I64, F64, BOOL = pa.string(), pa.int64(), pa.float64(), pa.bool_()
TS = pa.timestamp("us", tz="UTC")

# run.parquet: one row per point -- its configuration, then the metrics (definitions in results.metrics).
RUN = pa.schema([
    ("sweep", STR), ("point_id", STR), ("status", STR), ("reason", STR),
    ("model", STR), ("dataset", STR), ("dataset_source", STR), ("batch", I64), ("max_tokens", I64),
    ("shards", I64), ("power_cap_w", F64), ("enforced_limit_w", F64), ("samples", I64),
    ("temperature", F64), ("top_p", F64), ("seed", I64), ("engine", STR), ("length", STR),
    ("dtype", STR), ("device", STR), ("weights", STR), ("cluster", STR),
    ("gpu_name", STR), ("gpus", I64), ("nodes", I64), ("hostnames", STR), ("slurm_job_id", STR),
    ("attempt", I64), ("started_at", TS), ("finished_at", TS), ("load_s", F64), ("engine_ready_s", F64),
    ("decode_attention", STR), ("top_p_kernel", BOOL), ("pdl", BOOL), ("blas", STR), ("compile_prefill", BOOL),
    ("kv_together", BOOL), ("skinny", BOOL), ("defer_residual", BOOL),
    ("torch_threads", I64), ("samples_with_replacement", BOOL),
    ("responses", I64), ("prompt_tokens", I64), ("tokens", I64), ("wasted_tokens", I64), ("batches", I64),
    ("duration_s", F64), ("prefill_s", F64), ("decode_s", F64), ("tokens_per_s", F64),
    ("ttft_s", F64), ("tpot_s", F64), ("latency_s", F64),
    ("energy_j", F64), ("net_energy_j", F64), ("idle_power_w", F64),
    ("prefill_energy_j", F64), ("decode_energy_j", F64), ("cpu_energy_j", F64), ("dram_energy_j", F64),
    ("energy_per_token_j", F64), ("energy_per_response_j", F64), ("power_w", F64),
    ("gpu_util_pct", F64), ("gpu_mem_used_frac", F64), ("counter_vs_integral", F64),
    ("energy_method", STR), ("energybench_version", STR),
    # provenance (energybench.provenance): which code, software and command made the row
    ("git_commit", STR), ("git_dirty", BOOL), ("code_source", STR), ("python_version", STR),
    ("torch_version", STR), ("cuda_version", STR), ("driver_version", STR), ("nccl_version", STR),
    ("command", STR),
    # the engine's torch.compile cache (energybench.engine.compile_cache): cold (misses) or warm (hits only)
    ("compile_cache_dir", STR), ("compile_cache_hits", I64), ("compile_cache_misses", I64),
    # measurement notes and cross-checks (docs/measurement.md, docs/power.md)
    ("energy_notes", STR), ("power_notes", STR), ("sacct_energy_j", F64), ("sacct_note", STR),
    # workload=online (results.metrics.online_metrics); null for offline points
    ("workload", STR), ("rate_rps", F64), ("burstiness", F64), ("requests", I64), ("achieved_rate_rps", F64),
    ("ttft_p50_s", F64), ("ttft_p90_s", F64), ("ttft_p99_s", F64), ("tpot_p50_s", F64), ("tpot_p90_s", F64),
    ("tpot_p99_s", F64), ("latency_p50_s", F64), ("latency_p90_s", F64), ("latency_p99_s", F64),
    ("queue_s", F64), ("goodput_rps", F64), ("slo_attainment", F64), ("mean_live", F64),
    ("rampup_s", F64), ("drain_s", F64), ("rampup_energy_j", F64), ("drain_energy_j", F64),
])

# requests.parquet (online points): one row per request; times in seconds after serving started.
REQUESTS = pa.schema([
    ("point_id", STR), ("attempt", I64), ("request_index", I64), ("arrival_s", F64), ("admitted_s", F64),
    ("first_token_s", F64), ("finished_s", F64), ("prompt_tokens", I64), ("output_tokens", I64), ("eos", BOOL),
    ("queue_s", F64), ("ttft_s", F64), ("tpot_s", F64), ("latency_s", F64),
    ("energy_j", F64), ("window_energy_j", F64), ("in_window", BOOL), ("slo_met", BOOL),
])

# steps.parquet (online points): one row per engine step (prefill or decode forward, or an idle wait).
STEPS = pa.schema([
    ("point_id", STR), ("attempt", I64), ("step_index", I64), ("kind", STR), ("window", STR), ("started_at", TS),
    ("end_s", F64), ("duration_s", F64), ("rows", I64), ("live", I64), ("tokens", I64), ("new_tokens", I64),
    ("energy_j", F64),
])

# batches.parquet: one row per generate call, warm-up batches included and flagged.
BATCHES = pa.schema([
    ("point_id", STR), ("batch_index", I64), ("warmup", BOOL), ("attempt", I64), ("started_at", TS),
    ("responses", I64), ("prompt_tokens", I64), ("max_prompt_tokens", I64), ("tokens", I64),
    ("wasted_tokens", I64), ("eos_stops", I64), ("steps", I64), ("prefill_steps", I64),
    ("prefill_s", F64), ("decode_s", F64), ("duration_s", F64), ("ttft_s", F64), ("tpot_s", F64),
    ("tokens_per_s", F64), ("energy_j", F64), ("prefill_energy_j", F64), ("decode_energy_j", F64),
    ("step_times_s", pa.list_(F64)),
])


# samples/node=<host>/part-<k>.parquet: the node sampler's timeline, one row per GPU of the job per tick.
# energy_mj is NVML's cumulative counter; cpu_/dram_energy_j are the node's RAPL energy since the sampler
# started (same value on every GPU row of a tick: take differences, never sums, across GPUs).
# `node` is the hive partition (the directory name), not stored in the part files (SAMPLES_FILE):
# pyarrow's readers add it back (results.samples.read_samples gives exactly SAMPLES).
SAMPLES = pa.schema([
    ("point_id", STR), ("attempt", I64), ("node", STR), ("timestamp", TS), ("gpu_uuid", STR), ("gpu_index", I64),
    ("energy_mj", I64), ("power_w", F64), ("power_avg_w", F64), ("gpu_util_pct", F64), ("mem_util_pct", F64),
    ("mem_used_bytes", I64), ("mem_total_bytes", I64), ("temperature_c", I64), ("sm_clock_mhz", I64),
    ("power_limit_w", F64), ("throttle_reasons", I64), ("window", STR),
    ("power_cap_w", F64), ("enforced_limit_w", F64), ("cpu_energy_j", F64), ("dram_energy_j", F64),
])
SAMPLES_FILE = pa.schema([f for f in SAMPLES if f.name != "node"])

# gpus.parquet: one row per GPU of the job (every node), over the point's generation window.
GPUS = pa.schema([
    ("point_id", STR), ("attempt", I64), ("node", STR), ("gpu_uuid", STR), ("gpu_index", I64), ("gpu_name", STR),
    ("energy_j", F64), ("prefill_energy_j", F64), ("decode_energy_j", F64), ("duration_s", F64),
    ("idle_power_w", F64), ("power_w", F64), ("gpu_util_pct", F64), ("gpu_mem_used_frac", F64),
    ("counter_vs_integral", F64), ("samples", I64),
    ("power_cap_w", F64), ("found_limit_w", F64), ("enforced_limit_w", F64), ("energy_method", STR), ("note", STR),
])


def table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """Rows (dicts; missing keys become null) as a table of exactly `schema`; unknown keys are an error."""
    names = set(schema.names)
    for row in rows:
        extra = set(row) - names
        assert not extra, f"columns not in the schema: {sorted(extra)}"
    return pa.Table.from_pylist([{n: row.get(n) for n in schema.names} for row in rows], schema=schema)
