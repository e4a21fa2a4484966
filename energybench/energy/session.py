"""One point's measurement on this rank: node counters, the node's sampler process, idle baseline, per-GPU table."""

from __future__ import annotations

import logging
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

import torch

from energybench.config import MeterConfig
from energybench.device.gpus import NodeGpus
from energybench.device.limits import NO_LIMIT_COLUMNS, GpuLimit
from energybench.device.rapl import Rapl, RaplUnavailable
from energybench.distributed import DistEnv, agree, gather
from energybench.energy.counters import NodeCounters
from energybench.energy.meter import Meter, Reading
from energybench.energy.sampler import Sampler, SamplerError
from energybench.results.metrics import CROSS_CHECK_TOLERANCE
from energybench.results.schema import GPUS, table
from energybench.util.files import write_parquet
from energybench.util.numbers import mean_or_none, ratio, sum_or_none

log = logging.getLogger("energybench.energy")


class Measurement:
    """The meter every rank uses, and on the node leader the counters and sampler process behind it (the
    sampler is None where nothing needs one: meter.sample_hz=0 with every GPU counted and no RAPL)."""

    def __init__(self, cfg: MeterConfig, env: DistEnv, device: torch.device, node: NodeGpus,
                 limits: Mapping[str, GpuLimit], power_notes: list[str], rapl: Rapl | None, notes: list[str],
                 samples_dir: Path, fields: dict) -> None:
        self.cfg, self.env = cfg, env
        self.limits, self.power_notes = limits, power_notes
        self.notes = list(node.notes) + notes  # this node's, for run.parquet's energy_notes
        self.gpus = node.gpus if node.meter and env.is_node_leader else []
        self.sampler: Sampler | None = None
        self.counters: NodeCounters | None = None
        if env.is_node_leader:
            sampler = Sampler(self.gpus, rapl is not None, cfg.sample_hz, samples_dir, cfg.flush_s, limits, fields)
            self.sampler = sampler if sampler.needed else None
            self.counters = NodeCounters(env.hostname, self.gpus, rapl, self.sampler.read if self.sampler else None)
        self.meter = Meter(env, device, self.counters, self.sampler.set_windows if self.sampler else None)

    def idle(self) -> Reading | None:
        """The idle baseline: `meter.idle_s` seconds with nothing running, before the warm-up (collective)."""
        if self.cfg.idle_s <= 0:
            return None
        self.meter.begin("idle")
        time.sleep(self.cfg.idle_s)
        return self.meter.end("idle")

    def summary(self, generation: Reading, pid: str, attempt: int, pdir: Path) -> dict | None:
        """Collective: per-GPU rows of every node to rank 0, which writes gpus.parquet and returns run columns.
        Stops the sampler process first (its last part is written, its statistics final)."""
        if self.sampler is not None:
            self.sampler.stop()
        reports = gather(self.env, self._node_report() if self.env.is_node_leader else None)
        if self.env.rank != 0:
            return None
        idle = next((r for r in self.meter.readings if r.name == "idle"), None)
        ids = {"point_id": pid, "attempt": attempt}
        reports = [r for r in reports if r]
        gpus, shared = distinct_gpus(reports)
        rows = [gpu_row(g, node, generation, self.meter.readings, idle) | ids for node, g in gpus]
        spans = [(g["stats"].get("counter_j"), g["stats"].get("integral_j")) for _, g in gpus]
        columns = run_columns(rows, spans, generation, idle, [n for r in reports for n in r["notes"]] + shared,
                              [n for r in reports for n in r["power_notes"]])
        if rows:
            write_parquet(table(rows, GPUS), pdir / "gpus.parquet")
        return columns

    def _node_report(self) -> dict:
        assert self.counters is not None
        stats = self.sampler.stats.get("generation", {}) if self.sampler else {}
        hz = self.sampler.hz if self.sampler else 0
        gpus = []
        for gpu in self.gpus:
            method = "nvml_counter" if gpu.has_energy_counter else "power_integral"
            note = None if gpu.has_energy_counter else (
                f"no energy counter (pre-Volta?): energy integrated from power samples at {hz:g} Hz")
            gpus.append({"uuid": gpu.uuid, "index": gpu.index, "name": gpu.name, "method": method, "note": note,
                         "stats": stats.get(gpu.uuid, {}), "limit": self.limits.get(gpu.uuid)})  # a GpuLimit
        return {"node": self.env.hostname, "gpus": gpus,
                "notes": self.notes + self.counters.notes + (self.sampler.notes if self.sampler else [])
                + [f for gpu in self.gpus for f in gpu.faults], "power_notes": self.power_notes}


def distinct_gpus(reports: list[dict]) -> tuple[list[tuple[str, dict]], list[str]]:
    """(node, GPU report) of each GPU once, under the first node that reports it, and a note for each GPU that
    several nodes report (simulated nodes on one host sharing a device): the meter counts it once, and so
    must gpus.parquet and the idle baseline."""
    first: dict[str, str] = {}
    gpus, shared = [], []
    for r in reports:
        for g in r["gpus"]:
            if g["uuid"] in first:
                shared.append(f"GPU {g['uuid']} is reported by nodes {first[g['uuid']]} and {r['node']}: counted once, "
                              f"under {first[g['uuid']]}")
                continue
            first[g["uuid"]] = r["node"]
            gpus.append((r["node"], g))
    return gpus, shared


def gpu_row(g: dict, node: str, generation: Reading, readings: list[Reading], idle: Reading | None) -> dict:
    """One gpus.parquet row from a node's report of one GPU and rank 0's window readings."""
    uuid, stats, limit = g["uuid"], g["stats"], g["limit"]
    energy_j = generation.energy_j.get(uuid)

    def phase_j(phase: str) -> float | None:  # None, not 0, where no batch windows ran (online points)
        parts = [r.energy_j.get(uuid) for r in readings if re.fullmatch(rf"batch\d+/{phase}", r.name)]
        return sum_or_none(parts) if parts else None

    return {
        "node": node, "gpu_uuid": uuid, "gpu_index": g["index"], "gpu_name": g["name"],
        "energy_j": energy_j, "prefill_energy_j": phase_j("prefill"), "decode_energy_j": phase_j("decode"),
        "duration_s": generation.duration_s,
        "idle_power_w": ratio(idle.energy_j.get(uuid), idle.duration_s) if idle else None,
        "power_w": ratio(energy_j, generation.duration_s),
        "gpu_util_pct": stats.get("gpu_util_pct"), "gpu_mem_used_frac": stats.get("gpu_mem_used_frac"),
        "counter_vs_integral": ratio(stats.get("counter_j"), stats.get("integral_j")),
        "samples": stats.get("samples", 0),
        **(limit.gpu_columns() if limit is not None else NO_LIMIT_COLUMNS), "energy_method": g["method"],
        "note": g["note"] if energy_j is not None else "; ".join(filter(None, [g["note"], "energy not measured"])),
    }


def run_columns(rows: list[dict], spans: list[tuple[float | None, float | None]], generation: Reading,
                idle: Reading | None, energy_notes: list[str], power_notes: list[str]) -> dict:
    """run.parquet's energy columns beyond results.metrics: idle power, RAPL, utilization, cross-check.
    `spans`: per GPU, (counter growth, power integral) over the same span of `generation`, J."""
    pairs = [(c, i) for c, i in spans if c is not None and i]
    cross = ratio(sum(c for c, _ in pairs), sum(i for _, i in pairs)) if pairs else None
    if cross is not None and abs(cross - 1) > CROSS_CHECK_TOLERANCE:
        log.warning("counter_vs_integral=%.3f: the energy counters and the integral of the power samples differ "
                    "by more than %.0f%%; do not trust this point's energy without a look at its samples",
                    cross, CROSS_CHECK_TOLERANCE * 100)
    idle_j = [idle.energy_j.get(r["gpu_uuid"]) for r in rows] if idle else []
    methods = sorted({r["energy_method"] for r in rows})
    enforced = [r["enforced_limit_w"] for r in rows if r["enforced_limit_w"] is not None]
    return {
        "idle_power_w": ratio(sum_or_none(idle_j), idle.duration_s) if idle and rows else None,
        "cpu_energy_j": generation.cpu_energy_j, "dram_energy_j": generation.dram_energy_j,
        "gpu_util_pct": mean_or_none(r["gpu_util_pct"] for r in rows),
        "gpu_mem_used_frac": mean_or_none(r["gpu_mem_used_frac"] for r in rows),
        "counter_vs_integral": cross,
        "energy_method": "+".join(methods) if rows and generation.total_energy_j is not None else None,
        "enforced_limit_w": min(enforced) if enforced else None,
        "energy_notes": "; ".join(energy_notes) or None,
        "power_notes": "; ".join(power_notes) or None,
    }


def open_rapl(mode: str, host: str) -> tuple[Rapl | None, list[str], str | None]:
    """(RAPL or None, notes, error): meter.cpu=auto notes what is missing, meter.cpu=rapl makes it an error."""
    if mode == "none":
        return None, [], None
    try:
        rapl = Rapl.open()
    except RaplUnavailable as e:
        if mode == "rapl":
            return None, [], f"node {host}: {e}; meter.cpu=rapl needs it (use meter.cpu=auto or none)"
        return None, [f"{host}: CPU energy not measured: {e}"], None
    return rapl, [f"{host}: {rapl.dram_note}"] if rapl.dram_note else [], None


@contextmanager
def measurement(cfg: MeterConfig, env: DistEnv, device: torch.device, node: NodeGpus, limits: Mapping[str, GpuLimit],
                power_notes: list[str], pdir: Path, fields: dict) -> Iterator[Measurement]:
    """Collective: open RAPL and start the sampler process on each node leader (its start-up, paid here, is outside
    every window); it stops (last part written) on exit. `limits` (GPU UUID -> GpuLimit, from power.cap) go on
    the GPU's sample and gpus.parquet rows, `fields` (point_id, attempt) on every sample row."""
    rapl, notes, error = open_rapl(cfg.cpu, env.hostname) if env.is_node_leader else (None, [], None)
    samples_dir = pdir / "samples" / f"node={env.hostname}"
    m = Measurement(cfg, env, device, node, limits, power_notes, rapl, notes, samples_dir, fields)
    try:
        if error is None and m.sampler is not None:
            try:
                m.sampler.start()
            except SamplerError as e:
                error = f"node {env.hostname}: {e}"
        agree(env, error)
        yield m
    finally:
        if m.sampler is not None:
            m.sampler.stop()
        if m.counters is not None:
            m.counters.close()
