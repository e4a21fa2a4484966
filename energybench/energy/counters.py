"""A node's cumulative energy counters as the meter reads them at window edges: GPUs, then RAPL."""

from __future__ import annotations

import datetime as dt
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from energybench.energy.meter import Count
from energybench.device.nvml import Gpu, NvmlFault
from energybench.device.rapl import Rapl

log = logging.getLogger("energybench.energy")


class NodeCounters:
    """Reads, on the node leader, every GPU of the job on this node once, and the node's RAPL domains.

    GPUs with an energy counter give nvmlDeviceGetTotalEnergyConsumption; those without (pre-Volta)
    give the node sampler's power integral, and RAPL (`rapl`: opened, so present) gives the sampler's
    reading too: the sampler process polls it often enough to undo its wraparound. `sampled` is
    Sampler.read ({'cpu_j', 'dram_j', 'gpu_j': {uuid: J}}, None when lost), asked once per edge and
    only when needed. A counter that goes backwards (driver reload) starts a new epoch, so windows
    across it are null, and leaves a note; so does a failed read.
    """

    def __init__(self, node: str, gpus: list[Gpu], rapl: Rapl | None,
                 sampled: Callable[[], dict | None] | None = None) -> None:
        self.node, self.gpus, self.rapl = node, gpus, rapl
        self.sampled = sampled
        self._ask = sampled is not None and (rapl is not None or any(not g.has_energy_counter for g in gpus))
        self.notes: list[str] = []
        self._last: dict[str, Count] = {}
        self._pool = ThreadPoolExecutor(max(1, len(gpus)), thread_name_prefix="energybench-edge")

    def read(self) -> dict[str, Count | None]:
        """Keys 'gpu:<uuid>', 'cpu:<node>', 'dram:<node>' -> cumulative joules (None: unreadable now).

        The GPUs are read in parallel: one energy read takes ~4 ms on an H100 (ctypes releases the GIL).
        """
        out: dict[str, Count | None] = {}
        values = self._pool.map(self._gpu_j, self.gpus) if len(self.gpus) > 1 else map(self._gpu_j, self.gpus)
        sampled = (self.sampled() if self._ask else None) or {}  # type: ignore[misc]  # while the GPUs are read
        integral = sampled.get("gpu_j", {})
        for gpu, value_j in zip(self.gpus, values):
            value_j = value_j if gpu.has_energy_counter else integral.get(gpu.uuid)
            out[f"gpu:{gpu.uuid}"] = self._count(f"gpu:{gpu.uuid}", value_j, gpu.label)
        if self.rapl is not None:
            cpu_j, dram_j = sampled.get("cpu_j"), sampled.get("dram_j")
            out[f"cpu:{self.node}"] = self._count(f"cpu:{self.node}", cpu_j, f"{self.node} RAPL package")
            if self.rapl.dram_note is None:
                out[f"dram:{self.node}"] = self._count(f"dram:{self.node}", dram_j, f"{self.node} RAPL DRAM")
        return out

    def close(self) -> None:
        """Stop the reader threads."""
        self._pool.shutdown()

    def _gpu_j(self, gpu: Gpu) -> float | None:
        if not gpu.has_energy_counter:
            return None  # the sampler's integral instead
        try:
            return gpu.energy_mj() / 1e3
        except NvmlFault as e:
            self._note(str(e))
            return None

    def _count(self, key: str, value_j: float | None, label: str) -> Count | None:
        if value_j is None:
            return None
        last = self._last.get(key)
        epoch = last.epoch if last else 0
        if last is not None and value_j < last.value_j:
            epoch += 1
            when = dt.datetime.now(dt.timezone.utc).strftime("%H:%M:%S")
            self._note(f"{label}: energy counter went backwards at {when} UTC ({last.value_j:.0f} -> "
                       f"{value_j:.0f} J; driver reload?); windows across it are null")
        count = Count(value_j, epoch)
        self._last[key] = count
        return count

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)
            log.warning("%s", text)
