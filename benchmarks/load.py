"""How fast do sweeps load? Writes synthetic sample parts at the contract's schema, times the loaders.

    PYTHONPATH=. python benchmarks/load.py [--rows 1000000] [--points 8] [--nodes 2] [--gpus 4] [--hz 10]
                                           [--part-s 30] [--run-points 1000] [--repeat 3] [--json PATH]

Sample parts carry the columns of `energybench.results.schema.SAMPLES_FILE` (the contract with the
measurement issue); `node` is the directory (node=<host>), as the sampler writes it. The synthetic
sweep has `points` points, each sampled on `nodes` nodes x `gpus` GPUs at `hz`, written as parts of
`part_s` seconds (as the sampler flushes them; one layout per value), `rows` rows in all; beside it a sweep of
`run_points` finished points (run.parquet, status.json, config.yaml) times the points loader. Prints a
table and writes the records to --json (default docs/benchmarks/load.json) and a Markdown table beside it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

import energybench.results as results
from energybench import provenance
from energybench.config import DatasetConfig, ModelConfig, PointConfig, to_mapping
from energybench.results.schema import RUN, table
from energybench.results.schema import SAMPLES_FILE
from energybench.results.store import write_status

REPO = Path(__file__).resolve().parents[1]


def window_names(t_s: np.ndarray, idle_s: float = 5.0, batch_s: float = 4.0) -> np.ndarray:
    """idle, warmup0, then batchK/prefill (first 20% of each batch) and batchK/decode."""
    after = t_s - idle_s
    k = np.floor(np.maximum(after, 0) / batch_s).astype(int)
    phase = np.where((after % batch_s) < 0.2 * batch_s, "prefill", "decode")
    names = np.char.add(np.char.add(np.char.add("batch", (k - 1).astype(str)), "/"), phase)
    names = np.where(k == 0, "warmup0", names)
    return np.where(after < 0, "idle", names)


def write_samples(sweep: Path, points: int, nodes: int, gpus: int, rows: int, hz: float, part_s: float) -> int:
    """Sample parts of `points` points; returns the number of part files."""
    ticks = max(1, rows // (points * nodes * gpus))
    per_part = max(1, int(part_s * hz))
    t0 = np.datetime64("2026-01-01T00:00:00", "us")
    rng = np.random.default_rng(0)
    files = 0
    for p in range(points):
        pid = f"7b-alpaca-b{2 ** p}-t128-s{nodes * gpus}-pnone-reference-{p:08x}"
        t_s = np.arange(ticks) / hz
        window = window_names(t_s)
        for n in range(nodes):
            node = f"node{n:03d}"
            for start in range(0, ticks, per_part):
                sl = slice(start, min(ticks, start + per_part))
                m = sl.stop - sl.start
                power = 70 + 250 * (window[sl] != "idle") + rng.normal(0, 5, (gpus, m))
                energy = np.cumsum(power * 1000 / hz, axis=1).astype(np.int64)
                cols = {
                    "point_id": np.repeat(pid, gpus * m),
                    "timestamp": np.tile(t0 + (t_s[sl] * 1e6).astype("timedelta64[us]"), gpus),
                    "gpu_uuid": np.repeat([f"GPU-{n:04d}-{g:04d}" for g in range(gpus)], m),
                    "gpu_index": np.repeat(np.arange(gpus), m), "energy_mj": energy.ravel(),
                    "power_w": power.ravel(), "power_avg_w": power.ravel(),
                    "gpu_util_pct": np.full(gpus * m, 90.0), "mem_util_pct": np.full(gpus * m, 60.0),
                    "mem_used_bytes": np.full(gpus * m, 40 << 30), "mem_total_bytes": np.full(gpus * m, 80 << 30),
                    "temperature_c": np.full(gpus * m, 55), "sm_clock_mhz": np.full(gpus * m, 1980),
                    "power_limit_w": np.full(gpus * m, 700.0), "throttle_reasons": np.zeros(gpus * m, np.int64),
                    "window": np.tile(window[sl], gpus), "attempt": np.ones(gpus * m, np.int64),
                    "power_cap_w": [None] * (gpus * m), "enforced_limit_w": np.full(gpus * m, 700.0),
                    "cpu_energy_j": [None] * (gpus * m), "dram_energy_j": [None] * (gpus * m),
                }
                part = pa.Table.from_pydict({k: cols[k] for k in SAMPLES_FILE.names}, schema=SAMPLES_FILE)
                d = sweep / f"point={pid}" / "samples" / f"node={node}"
                d.mkdir(parents=True, exist_ok=True)
                pq.write_table(part, d / f"part-{start // per_part:05d}.parquet")
                files += 1
    return files


def write_runs(sweep: Path, n: int) -> None:
    """`n` finished points: config.yaml, status.json, run.parquet (as a real sweep leaves them)."""
    model = ModelConfig(name="7b", dim=4096, n_layers=32, n_heads=32)
    for i in range(n):
        cfg = PointConfig(model=model, dataset=DatasetConfig(name="synthetic", like="alpaca"), batch=i + 1,
                          sweep=sweep.name)
        pdir = sweep / f"point=run{i:05d}"
        pdir.mkdir(parents=True)
        (pdir / "config.yaml").write_text(yaml.safe_dump(to_mapping(cfg), sort_keys=False))
        write_status(pdir, "done")
        row = {"sweep": sweep.name, "point_id": f"run{i:05d}", "status": "done", "model": "7b", "batch": i + 1,
               "tokens": 1000, "duration_s": 10.0, "tokens_per_s": 100.0, "energy_j": 3000.0, "dtype": "float16",
               "gpu_name": "NVIDIA H100 80GB HBM3", "shards": 1, "responses": 10, "prompt_tokens": 1000}
        pq.write_table(table([row], RUN), pdir / "run.parquet")


def record(case: str, fn, repeat: int) -> dict:
    """Median wall time of `repeat` calls of `fn` (the first also warms the page cache)."""
    times, n = [], 0
    for _ in range(repeat):
        t = time.perf_counter()
        n = len(fn())
        times.append(time.perf_counter() - t)
    seconds = statistics.median(times)
    return {"case": case, "rows": n, "seconds": round(seconds, 3), "rows_per_s": round(n / seconds)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--points", type=int, default=8)
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--gpus", type=int, default=4)
    ap.add_argument("--hz", type=float, default=10.0)
    ap.add_argument("--part-s", type=float, nargs="+", default=[5.0, 30.0],
                    help="seconds per part file (the sampler's meter.flush_s; default 5)")
    ap.add_argument("--run-points", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path, default=REPO / "docs" / "benchmarks" / "load.json")
    args = ap.parse_args()

    load_before = round(os.getloadavg()[0], 2)
    root = Path(tempfile.mkdtemp(prefix="eb-load-"))
    records, files = [], {}
    try:
        write_runs(root / "runs-sweep", args.run_points)
        for part_s in args.part_s:
            sweep = root / f"samples-{part_s:g}s"
            files[part_s] = write_samples(sweep, args.points, args.nodes, args.gpus, args.rows, args.hz, part_s)
            one = sorted(p.name.removeprefix("point=") for p in sweep.iterdir())[0]
            tag = f"{files[part_s]} files of {part_s:g} s"
            cases = [
                (f"samples, all columns ({tag})", lambda: results.gpu_samples(sweep)),
                (f"samples, power_w + window ({tag})",
                 lambda: results.gpu_samples(sweep, columns=["power_w", "window"])),
                (f"samples, one point ({tag})", lambda: results.gpu_samples(sweep, points=[one])),
                (f"samples, window=idle ({tag})", lambda: results.gpu_samples(sweep, windows=["idle"])),
            ]
            records += [record(name, fn, args.repeat) for name, fn in cases]
        records.append(record(f"points: {args.run_points} done points",
                              lambda: results.points(root / "runs-sweep"), args.repeat))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    meta = {**provenance.benchmark_record(), "date": dt.date.today().isoformat(), "machine": platform.node(),
            "cpus": os.cpu_count(),
            "load_avg_1min": load_before, "python": platform.python_version(),
            "pyarrow": pa.__version__, "command": "PYTHONPATH=. python benchmarks/load.py " + " ".join(
                f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                for k, v in vars(args).items() if k != "json"),
            "sample_files": {f"{k:g}s": v for k, v in files.items()}, "points": args.points,
            "nodes": args.nodes, "gpus_per_node": args.gpus}
    width = max(len(r["case"]) for r in records)
    header = f"{'case':<{width}} {'rows':>10} {'seconds':>8} {'rows/s':>12}"
    lines = [header, "-" * len(header)] + [
        f"{r['case']:<{width}} {r['rows']:>10,} {r['seconds']:>8.3f} {r['rows_per_s']:>12,}" for r in records]
    print("\n".join(lines))
    print(f"({meta['cpus']} CPUs, load average {meta['load_avg_1min']} when it started)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({**meta, "records": records}, indent=1) + "\n")
    md = [f"# Loading benchmark ({meta['date']}, {meta['cpus']} CPUs, load average {meta['load_avg_1min']})", "",
          "Goal (issue 8): 10^6 per-GPU sample rows load in a few seconds. Median of "
          f"{args.repeat} runs, warm page cache, pyarrow {meta['pyarrow']}, on the shared 2-core development "
          "machine (other engineers' tests running, hence the load average).", "", f"`{meta['command']}`", "",
          "| case | rows | seconds | rows/s |", "| --- | ---: | ---: | ---: |"]
    md += [f"| {r['case']} | {r['rows']:,} | {r['seconds']:.3f} | {r['rows_per_s']:,} |" for r in records]
    args.json.with_suffix(".md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
