"""The meter on real GPUs: the same point with the sampler off (0 Hz) and on (10 Hz), and NVML facts.

    python benchmarks/meter.py [--shards 1|2] [--out DIR] [--pairs N | --max-s S] [override ...]

Tokens/s overhead of the 10 Hz sampler process (pairs of runs in ABBA order, 0 Hz then 10 Hz, then 10 Hz
then 0 Hz, ...: N of them, with the 95 % confidence interval of the mean paired overhead; without
--pairs, while time allows on one shard, one pair with --shards 2), counter_vs_integral, idle power, and
what each NVML read costs. With --shards 2 (a 2-GPU machine, model parallel over NCCL): both GPUs' energy
summed, one gpus.parquet row per GPU. Prints a table, writes DIR/meter.json and DIR/meter.md
(meter-2gpu.* for --shards 2). Power limits are only read: power.backend=none power.policy=observe.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from energybench import provenance
from energybench.confload import compose  # noqa: E402
from energybench.launch import run_local  # noqa: E402
from energybench.results.layout import point_dir  # noqa: E402
from energybench.results.samples import read_samples  # noqa: E402

POINT = ["model=7b", "dataset=synthetic", "samples=128", "batch=64", "max_tokens=128", "warmup_batches=1",
         "meter.gpu=nvml", "meter.idle_s=5", "power.backend=none", "power.policy=observe",
         "sweep=meter-bench", "resume=false"]
RUN_KEYS = ("point_id", "attempt", "tokens", "tpot_s", "ttft_s", "duration_s", "tokens_per_s", "energy_j",
            "idle_power_w", "net_energy_j",
            "power_w", "energy_per_token_j", "counter_vs_integral", "gpu_util_pct", "gpu_mem_used_frac",
            "energy_method", "power_cap_w", "enforced_limit_w", "energy_notes", "power_notes", "gpu_name")


CALLS = [("nvmlDeviceGetTotalEnergyConsumption", ()), ("nvmlDeviceGetPowerUsage", ()),
         ("nvmlDeviceGetFieldValues", ([186, 185],)), ("nvmlDeviceGetFieldValues", ([83, 186, 185],)),
         ("nvmlDeviceGetUtilizationRates", ()), ("nvmlDeviceGetMemoryInfo", ()),
         ("nvmlDeviceGetTemperature", ("NVML_TEMPERATURE_GPU",)), ("nvmlDeviceGetClockInfo", ("NVML_CLOCK_SM",)),
         ("nvmlDeviceGetEnforcedPowerLimit", ()), ("nvmlDeviceGetCurrentClocksEventReasons", ())]


def probe() -> dict:
    """NVML as seen on this machine: ids, read-only limits, supported fields, counter step, sampler tick cost."""
    import torch

    from energybench.device.nvml import Nvml
    from energybench.energy.samples import read_gpu

    nvml = Nvml()
    info = nvml.gpus()[0]
    gpu = nvml.gpu(info)
    steps, e0, t_end = [], gpu.energy_mj(), time.perf_counter() + 2.0
    while time.perf_counter() < t_end:  # when does the energy counter move?
        e = gpu.energy_mj()
        if e != e0:
            steps.append(time.perf_counter())
            e0 = e
    t0 = time.perf_counter()
    for _ in range(100):
        row = read_gpu(gpu)
    tick_ms = (time.perf_counter() - t0) / 100 * 1e3
    calls_ms = {}
    for name, args in CALLS:
        t0 = time.perf_counter()
        for _ in range(50):
            gpu.optional(name, *[getattr(nvml.lib, a) if isinstance(a, str) else a for a in args])
        calls_ms[f"{name}{list(args) if args else ''}"] = (time.perf_counter() - t0) / 50 * 1e3
    out = {
        "driver": nvml.lib.nvmlSystemGetDriverVersion(), "gpu_name": info.name, "nvml_uuid": info.uuid,
        "torch_uuid": str(torch.cuda.get_device_properties(0).uuid) if torch.cuda.is_available() else None,
        "power_limit_w": gpu.limit_w(), "enforced_limit_w": gpu.enforced_limit_w(),
        "limit_constraints_w": list(gpu.constraints_w()), "has_energy_counter": gpu.has_energy_counter,
        "power_fields_w": list(gpu.power_fields_w()), "power_usage_w": gpu.power_usage_w(),
        "counter_step_s": statistics.median(b - a for a, b in zip(steps, steps[1:])) if len(steps) > 2 else None,
        "sampler_tick_ms_per_gpu": tick_ms, "nvml_call_ms": calls_ms,
        "sample_row": {k: v for k, v in row.items() if k != "gpu_uuid"},
    }
    nvml.close()
    return out


def merged(*groups: list[str]) -> list[str]:
    """key=value overrides, later groups replacing earlier ones key by key."""
    out: dict[str, str] = {}
    for group in groups:
        out.update(o.split("=", 1) for o in group)  # type: ignore[misc]
    return [f"{k}={v}" for k, v in out.items()]


def measure(overrides: list[str], hz: float, out_dir: Path) -> dict:
    """Run the point once at `hz`; its run.parquet row, per-GPU rows and sample count."""
    cfg = compose(merged(POINT, overrides, [f"meter.sample_hz={hz:g}", f"out_dir={out_dir}"]))
    outcome = run_local(cfg)
    if outcome.state != "done":
        raise SystemExit(f"point failed at {hz:g} Hz: {outcome.reason}")
    pdir = point_dir(cfg)
    row = pq.read_table(pdir / "run.parquet").to_pylist()[0]
    gpus = pq.read_table(pdir / "gpus.parquet").to_pylist()
    attempts = read_samples(pdir).column("attempt").to_pylist()
    return {"sample_hz": hz, **{k: row.get(k) for k in RUN_KEYS},
            "sample_rows": attempts.count(row["attempt"]),
            "gpus": [{k: g[k] for k in ("gpu_index", "gpu_uuid", "energy_j", "idle_power_w", "power_w",
                                        "counter_vs_integral", "gpu_util_pct", "samples")} for g in gpus]}


def paired_overheads(runs: list[dict]) -> list[float]:
    """Per pair of consecutive runs (one at 0 Hz, one sampling): tokens/s lost to the sampler, in %."""
    out = []
    for a, b in zip(runs[0::2], runs[1::2]):
        off, on = (a, b) if a["sample_hz"] == 0 else (b, a)
        out.append((off["tokens_per_s"] - on["tokens_per_s"]) / off["tokens_per_s"] * 100)
    return out


# Two-sided 95 % Student t quantiles by degrees of freedom (n - 1), for the mean paired overhead.
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
       11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093}


def summarize(runs: list[dict]) -> dict:
    on = [r for r in runs if r["sample_hz"] > 0]
    overheads = paired_overheads(runs)
    n = len(overheads)
    mean = statistics.fmean(overheads) if overheads else None
    half = T95.get(n - 1, 1.96) * statistics.stdev(overheads) / n ** 0.5 if n > 1 else None
    return {
        "pairs": n,
        "tokens_per_s_overhead_pct": mean,
        "tokens_per_s_overhead_pct_ci95": [mean - half, mean + half] if half is not None else None,
        "tokens_per_s_overhead_pct_each": overheads,
        "counter_vs_integral": [r["counter_vs_integral"] for r in on],
        "idle_power_w": [r["idle_power_w"] for r in runs],
        "per_gpu_energy_sums": all(abs(sum(g["energy_j"] for g in r["gpus"]) - r["energy_j"]) < 1e-6 * r["energy_j"]
                                   for r in runs if r["energy_j"]),
    }


def table(runs: list[dict]) -> str:
    head = ("| sample Hz | tokens/s | decode step ms | duration s | energy J | idle W | net J | J/token "
            "| counter/integral | GPU util % | samples |")
    lines = [head, "|" + "---|" * 11]
    for r in runs:
        cvi = f"{r['counter_vs_integral']:.4f}" if r["counter_vs_integral"] else "-"
        util = f"{r['gpu_util_pct']:.1f}" if r["gpu_util_pct"] is not None else "-"
        hz = f"{r['sample_hz']:g}"
        lines.append(f"| {hz} | {r['tokens_per_s']:.1f} | {r['tpot_s'] * 1e3:.2f} | {r['duration_s']:.2f} | "
                     f"{r['energy_j']:.1f} | "
                     f"{r['idle_power_w']:.1f} | {r['net_energy_j']:.1f} | {r['energy_per_token_j']:.4f} | {cvi} | "
                     f"{util} | {r['sample_rows']} |")
    return "\n".join(lines)


def ci(bounds: list[float] | None) -> str:
    return "-" if bounds is None else f"[{bounds[0]:.2f}, {bounds[1]:.2f}] %"


def save(record: dict, runs: list[dict], out: Path, name: str, shards: int) -> None:
    """Write <out>/<name>.json (everything) and <name>.md (the table and the summary)."""
    record.update(runs=runs, summary=summarize(runs))
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    s, p = record["summary"], record["probe"]
    overhead = s["tokens_per_s_overhead_pct"]
    md = (f"# Meter benchmark ({shards} GPU{'s' if shards > 1 else ''})\n\n"
          f"{p['gpu_name']}, driver {p['driver']}, {record['date']}; command: `{record['command']}`\n"
          f"point: `{' '.join(record['point'])}`\n\n{table(runs)}\n\n"
          f"- tokens/s overhead of the 10 Hz sampler process: {'-' if overhead is None else format(overhead, '.2f')} % "
          f"(each pair: {', '.join(f'{x:.2f}' for x in s['tokens_per_s_overhead_pct_each']) or '-'}); "
          f"95 % confidence interval of the mean: {ci(s['tokens_per_s_overhead_pct_ci95'])}\n"
          f"- energy counter step: {p['counter_step_s']} s; "
          f"sampler tick with a counter read: {p['sampler_tick_ms_per_gpu']:.3f} ms per GPU\n"
          f"- per-GPU energies sum to the point's energy: {s['per_gpu_energy_sums']}\n")
    if shards > 1:
        md += ("\n| sample Hz | GPU | UUID | energy J | idle W | power W | counter/integral |\n"
               "|---|---|---|---|---|---|---|\n")
        md += "".join(f"| {r['sample_hz']:g} | {g['gpu_index']} | {g['gpu_uuid']} | {g['energy_j']:.1f} | "
                      f"{g['idle_power_w']:.1f} | {g['power_w']:.1f} | {g['counter_vs_integral'] or '-'} |\n"
                      for r in runs for g in r["gpus"])
    (out / f"{name}.md").write_text(md)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    ap.add_argument("--max-s", type=float, default=240.0, help="start no new pair of runs after this long")
    ap.add_argument("--pairs", type=int, default=0, help="exactly this many pairs of runs (overrides --max-s)")
    ap.add_argument("--results", type=Path, default=Path("/tmp/meter-bench"))
    ap.add_argument("--burn-in", action="store_true",
                    help="one uncounted run first: a process's first point pays one-off costs in its measured window")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    started = time.monotonic()
    record = {"date": dt.date.today().isoformat(), **provenance.benchmark_record(),
              "command": " ".join(["python", *sys.argv]),
              "sampler": "a separate process per node (energybench.energy.sampler_process)",
              "host": platform.node(), "point": merged(POINT, [f"shards={args.shards}"], args.overrides),
              "probe": probe()}
    overrides = [f"shards={args.shards}", *args.overrides]
    runs: list[dict] = []
    name = "meter" if args.shards == 1 else f"meter-{args.shards}gpu"

    def another_pair() -> bool:
        if args.pairs:
            return len(runs) < 2 * args.pairs
        if not runs:
            return True
        return args.shards == 1 and time.monotonic() - started + 1.2 * sum(r["wall_s"] for r in runs[-2:]) < args.max_s

    if args.burn_in:
        t0 = time.monotonic()
        record["burn_in"] = {**measure(overrides, 0.0, args.results), "wall_s": time.monotonic() - t0}
        print(f"burn-in (not counted): {record['burn_in']['tokens_per_s']:.1f} tokens/s", flush=True)
    while another_pair():
        # ABBA: odd pairs sample first, so a drift (the card warming) does not read as overhead.
        for hz in (0.0, 10.0) if len(runs) % 4 == 0 else (10.0, 0.0):
            t0 = time.monotonic()
            runs.append({**measure(overrides, hz, args.results), "wall_s": time.monotonic() - t0})
            print(f"{hz:g} Hz: {runs[-1]['tokens_per_s']:.1f} tokens/s, decode step {runs[-1]['tpot_s'] * 1e3:.2f} ms, "
                  f"{runs[-1]['energy_j']:.1f} J", flush=True)
            save(record, runs, args.out, name, args.shards)  # after every run: a timeout keeps what ran
    print((args.out / f"{name}.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
