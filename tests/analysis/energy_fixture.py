"""TEST FIXTURE: energy data for a real CPU sweep, which has no GPU meter.

The sweep's own files give the timeline (each batch's start, prefill and decode durations); this module adds
what a GPU meter would have written beside them, at the contract's columns (energybench.results.tables):
per-GPU samples at 10 Hz, gpus.parquet, and the energy columns of run.parquet and batches.parquet. Power is
scripted per window (idle, prefill, decode); energies are integrals of that same power, so every number a
figure shows can be recomputed by a test.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from energybench.results.metrics import derived
from energybench.results.schema import BATCHES, RUN, table
from energybench.results.schema import GPUS, SAMPLES_FILE

IDLE_W, PREFILL_W, DECODE_W = 70.0, 300.0, 200.0  # per GPU; GPU k draws k W more (to tell lines apart)
IDLE_S, HZ = 2.0, 10.0
GPU_NAME = "NVIDIA H100 80GB HBM3"


def _windows(batches: list[dict]) -> list[tuple[float, float, str, float]]:
    """(start_s, end_s, window, watts) from the point's batches, seconds since the first batch started."""
    t0 = batches[0]["started_at"]
    spans = [(-IDLE_S, 0.0, "idle", IDLE_W)]
    for b in batches:
        start = (b["started_at"] - t0).total_seconds()
        mid, end = start + b["prefill_s"], start + b["prefill_s"] + b["decode_s"]
        if b["warmup"]:
            spans.append((start, end, f"warmup{b['batch_index']}", DECODE_W))
        else:
            spans.append((start, mid, f"batch{b['batch_index']}/prefill", PREFILL_W))
            spans.append((mid, end, f"batch{b['batch_index']}/decode", DECODE_W))
    return spans


def _power(spans, t_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scripted power and window name at times t_s; between batches the generation window draws DECODE_W."""
    watts = np.full(t_s.shape, DECODE_W)
    names = np.full(t_s.shape, "generation", dtype=object)
    for start, end, name, w in spans:
        inside = (t_s >= start) & (t_s < end)
        watts[inside], names[inside] = w, name
    return watts, names


def _energy_j(spans, start_s: float, end_s: float) -> float:
    """Exact integral of the scripted power over [start_s, end_s] (spans do not overlap)."""
    total = (end_s - start_s) * DECODE_W
    for start, end, _, watts in spans:
        total += max(0.0, min(end_s, end) - max(start_s, start)) * (watts - DECODE_W)
    return total


def fill(point_dir: Path, nodes: int = 1, gpus_per_node: int = 1) -> dict:
    """Write samples, gpus.parquet and the energy columns of one done point; returns its new run row."""
    run = pq.read_table(point_dir / "run.parquet").to_pylist()[0]
    batches = pq.read_table(point_dir / "batches.parquet").to_pylist()
    spans = _windows(batches)
    t0 = batches[0]["started_at"]
    measured = [b for b in batches if not b["warmup"]]
    gen_start = (measured[0]["started_at"] - t0).total_seconds()
    n_gpus = nodes * gpus_per_node
    extra = sum(range(n_gpus))  # GPU k draws k W more than the script
    gen_j = _energy_j(spans, gen_start, gen_start + run["duration_s"])
    energy_j = gen_j * n_gpus + extra * run["duration_s"]

    shutil.rmtree(point_dir / "samples", ignore_errors=True)
    end_s = max(end for _, end, _, _ in spans)
    t_s = np.arange(-IDLE_S, end_s, 1 / HZ)
    watts, names = _power(spans, t_s)
    gpu_rows = []
    for n in range(nodes):
        node = f"node{n}"
        cols: dict[str, list] = {c: [] for c in SAMPLES_FILE.names}
        for g in range(gpus_per_node):
            k = n * gpus_per_node + g
            w = watts + k
            uuid = f"GPU-fixture-{k:04d}"
            cols["point_id"] += [run["point_id"]] * len(t_s)
            cols["timestamp"] += [t0 + dt.timedelta(seconds=float(t)) for t in t_s]
            cols["gpu_uuid"] += [uuid] * len(t_s)
            cols["gpu_index"] += [g] * len(t_s)
            cols["energy_mj"] += np.cumsum(w * 1000 / HZ).astype(np.int64).tolist()
            for c, v in (("power_w", w), ("power_avg_w", w)):
                cols[c] += v.tolist()
            for c, v in (("gpu_util_pct", 85.0), ("mem_util_pct", 40.0), ("mem_used_bytes", 32 << 30),
                         ("mem_total_bytes", 80 << 30), ("temperature_c", 50), ("sm_clock_mhz", 1980),
                         ("power_limit_w", 700.0), ("throttle_reasons", 0)):
                cols[c] += [v] * len(t_s)
            cols["window"] += names.tolist()
            for c, v in (("attempt", 1), ("power_cap_w", run["power_cap_w"]), ("enforced_limit_w", 700.0),
                         ("cpu_energy_j", None), ("dram_energy_j", None)):
                cols[c] += [v] * len(t_s)
            gpu_rows.append({"point_id": run["point_id"], "node": node, "gpu_uuid": uuid, "gpu_index": g,
                             "gpu_name": GPU_NAME, "energy_j": gen_j + k * run["duration_s"],
                             "idle_power_w": IDLE_W + k, "power_w": gen_j / run["duration_s"] + k,
                             "gpu_util_pct": 85.0, "gpu_mem_used_frac": 0.4, "counter_vs_integral": 1.0,
                             "power_cap_w": run["power_cap_w"], "enforced_limit_w": 700.0})
        part = pa.Table.from_pydict(cols, schema=SAMPLES_FILE)
        (point_dir / "samples" / f"node={node}").mkdir(parents=True)
        pq.write_table(part, point_dir / "samples" / f"node={node}" / "part-00000.parquet")
    pq.write_table(pa.Table.from_pylist(gpu_rows, schema=GPUS), point_dir / "gpus.parquet")

    for b in batches:
        start = (b["started_at"] - t0).total_seconds()
        pre = _energy_j(spans, start, start + b["prefill_s"]) * n_gpus + extra * b["prefill_s"]
        dec = _energy_j(spans, start + b["prefill_s"], start + b["duration_s"]) * n_gpus + extra * b["decode_s"]
        b.update(prefill_energy_j=pre, decode_energy_j=dec, energy_j=pre + dec)
    pq.write_table(table(batches, BATCHES), point_dir / "batches.parquet")

    idle_w = IDLE_W * n_gpus + extra
    run.update(derived(run["tokens"], run["responses"], run["duration_s"], energy_j, idle_w))
    run.update(energy_j=energy_j, idle_power_w=idle_w, gpu_name=GPU_NAME, gpus=n_gpus, nodes=nodes,
               dtype="float16", device="cuda", energy_method="nvml_counter", gpu_util_pct=85.0,
               gpu_mem_used_frac=0.4, counter_vs_integral=1.0, enforced_limit_w=700.0,
               prefill_energy_j=sum(b["prefill_energy_j"] for b in measured),
               decode_energy_j=sum(b["decode_energy_j"] for b in measured))
    pq.write_table(table([run], RUN), point_dir / "run.parquet")
    return run
