"""What the sampler reads from one GPU per tick, the per-window statistics it keeps, and its Parquet parts."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from energybench.device.nvml import Gpu
from energybench.results.schema import SAMPLES_FILE, table
from energybench.util.files import write_parquet


def read_gpu(gpu: Gpu, energy: bool = True) -> dict:
    """One timeline row's GPU fields (schema SAMPLES); a field the GPU does not support is None.

    `power_w` is the instant field where the GPU has it (else nvmlDeviceGetPowerUsage), `power_avg_w`
    NVML's 1 s average field. `energy=False` skips the energy counter (energy_mj None): it is the one
    slow read (about 4 ms on an H100, where every other field takes microseconds). Raises NvmlFault on
    any NVML error other than unsupported or refused fields.
    """
    lib = gpu.lib
    instant_w, average_w = gpu.power_fields_w()
    util = gpu.optional("nvmlDeviceGetUtilizationRates")
    mem = gpu.optional("nvmlDeviceGetMemoryInfo")
    limit_mw = gpu.optional("nvmlDeviceGetEnforcedPowerLimit")
    return {
        "gpu_uuid": gpu.uuid, "gpu_index": gpu.index,
        "energy_mj": gpu.energy_mj() if energy and gpu.has_energy_counter else None,
        "power_w": instant_w if instant_w is not None else gpu.power_usage_w(),
        "power_avg_w": average_w,
        "gpu_util_pct": None if util is None else float(util.gpu),
        "mem_util_pct": None if util is None else float(util.memory),
        "mem_used_bytes": None if mem is None else int(mem.used),
        "mem_total_bytes": None if mem is None else int(mem.total),
        "temperature_c": gpu.optional("nvmlDeviceGetTemperature", lib.NVML_TEMPERATURE_GPU),
        "sm_clock_mhz": gpu.optional("nvmlDeviceGetClockInfo", lib.NVML_CLOCK_SM),
        "power_limit_w": None if limit_mw is None else limit_mw / 1e3,
        "throttle_reasons": gpu.throttle_reasons(),
    }


@dataclass
class WindowStats:
    """One GPU over one window, from its samples: counter energy vs the power integral, mean utilization.

    The cross-check compares the counter's growth between its first and last reading inside the window
    with the integral of the power samples between the same two moments.
    """

    samples: int = 0
    t_last: float = 0.0
    p_last_w: float | None = None
    integral_j: float = 0.0  # trapezoid integral of power since the window's first sample
    e_first_mj: float | None = None  # first and last counter readings, with the integral at each
    i_first_j: float = 0.0
    e_last_mj: float | None = None
    i_last_j: float = 0.0
    counter_broken: bool = False  # went backwards inside the window
    util_sum: float = 0.0
    util_n: int = 0
    mem_sum: float = 0.0
    mem_n: int = 0

    def add(self, t: float, row: dict) -> None:
        e, p = row["energy_mj"], row["power_w"]
        if self.samples and p is not None and self.p_last_w is not None:
            self.integral_j += (p + self.p_last_w) / 2 * (t - self.t_last)
        if e is not None:
            if self.e_first_mj is None:
                self.e_first_mj, self.i_first_j = e, self.integral_j
            elif self.e_last_mj is not None and e < self.e_last_mj:
                self.counter_broken = True
            self.e_last_mj, self.i_last_j = e, self.integral_j
        self.samples += 1
        self.t_last, self.p_last_w = t, p if p is not None else self.p_last_w
        if row["gpu_util_pct"] is not None:
            self.util_sum += row["gpu_util_pct"]
            self.util_n += 1
        if row["mem_used_bytes"] is not None and row["mem_total_bytes"]:
            self.mem_sum += row["mem_used_bytes"] / row["mem_total_bytes"]
            self.mem_n += 1

    def summary(self) -> dict:
        """gpu_util_pct, gpu_mem_used_frac (means); counter_j and integral_j between the first and last counter
        readings (None unless there were two, with no counter restart between); samples."""
        spanned = self.e_first_mj is not None and self.i_last_j > self.i_first_j and not self.counter_broken
        return {
            "gpu_util_pct": self.util_sum / self.util_n if self.util_n else None,
            "gpu_mem_used_frac": self.mem_sum / self.mem_n if self.mem_n else None,
            "counter_j": (self.e_last_mj - self.e_first_mj) / 1e3 if spanned else None,  # type: ignore[operator]
            "integral_j": self.i_last_j - self.i_first_j if spanned else None,
            "samples": self.samples,
        }


class PartWriter:
    """Writes a node's rows as `part-<k>.parquet` files, each whole and renamed into place."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        taken = [int(m.group(1)) for p in directory.glob("part-*.parquet")
                 if (m := re.fullmatch(r"part-(\d+)\.parquet", p.name))] if directory.is_dir() else []
        self.next_k = max(taken, default=-1) + 1  # a new attempt of the point adds parts, never overwrites

    def write(self, rows: list[dict]) -> Path:
        path = self.directory / f"part-{self.next_k:05d}.parquet"
        write_parquet(table(rows, SAMPLES_FILE), path)
        self.next_k += 1
        return path
