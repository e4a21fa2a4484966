"""The node's sampler: one background thread on the node leader reading every GPU of the job and RAPL."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from pathlib import Path
from typing import Callable

from energybench.energy.nvml import Gpu, NvmlFault
from energybench.energy.rapl import Rapl
from energybench.energy.samples import PartWriter, WindowStats, read_gpu

log = logging.getLogger("energybench.energy")

TRACKED = ("idle", "generation")  # windows whose per-GPU statistics the sampler keeps
FALLBACK_HZ = 10.0  # polling rate when a GPU has no energy counter (its energy is the power integral)
RAPL_HZ = 1.0  # polling rate that keeps RAPL's wraparound unambiguous when no timeline is written
COUNTER_EVERY_S = 1.0  # the energy counter is read at most this often (4 ms a read on H100; it steps every 0.1 s)


class Sampler:
    """Reads every GPU of the job on this node (and RAPL) `hz` times a second in a thread.

    Rows (schema SAMPLES, one per GPU per tick) stream to `part-<k>.parquet` in `out_dir` every
    `flush_s`. The energy counter is read once every COUNTER_EVERY_S (energy_mj is null on the rows
    between): it is the slow read, and the totals come from the meter's edge readings anyway. With
    hz=0 no timeline is written, but the thread still polls when something needs it (at 10 Hz when a
    GPU's power must be integrated, at 1 Hz for RAPL). Keeps, per GPU, statistics of the
    TRACKED windows (`stats`) and a running power integral (`integrated_j`) for GPUs without an energy
    counter.
    """

    def __init__(self, gpus: list[Gpu], rapl: Rapl | None, hz: float, out_dir: Path | None, flush_s: float,
                 windows: Callable[[], tuple[str, ...]], constant: dict[str, dict] | None = None,
                 node_fields: dict | None = None) -> None:
        self.gpus, self.rapl = gpus, rapl
        self.write_rows = hz > 0 and out_dir is not None
        fallback = any(not g.has_energy_counter for g in gpus)
        self.hz = hz if hz > 0 else FALLBACK_HZ if fallback else RAPL_HZ if rapl else 0.0
        self.writer = PartWriter(out_dir) if self.write_rows else None
        self.flush_s = flush_s
        self.windows = windows
        self.constant = constant or {}  # per GPU UUID: columns repeated on its rows (power_cap_w, ...)
        self.node_fields = node_fields or {}  # point_id, attempt (the node is the directory: node=<host>)
        self.notes: list[str] = []  # faults seen, once each
        self.stats: dict[str, dict[str, WindowStats]] = {}  # window -> GPU UUID -> statistics
        self.ticks = 0
        self._counter_read_at = float("-inf")
        self._rows: list[dict] = []
        self._integral: dict[str, tuple[float, float, float | None]] = {}  # uuid -> (joules, t, last power)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="energybench-sampler", daemon=True)

    @property
    def needed(self) -> bool:
        return self.hz > 0 and bool(self.gpus or self.rapl)

    def start(self) -> None:
        if self.needed:
            self._thread.start()

    def stop(self) -> None:
        """Stop the thread and write the last part."""
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join()

    def integrated_j(self, uuid: str) -> float | None:
        """Energy of one GPU from integrating its power since the sampler started, up to now, joules."""
        with self._lock:
            if uuid not in self._integral:
                return None
            joules, t, p = self._integral[uuid]
        return joules + (p or 0.0) * (time.monotonic() - t)

    def _run(self) -> None:
        period, flushed = 1.0 / self.hz, time.monotonic()
        deadline = time.monotonic()
        while not self._stop.is_set():
            self._tick()
            deadline += period
            now = time.monotonic()
            if deadline < now:  # fell behind (a slow read): skip the missed ticks rather than burst
                deadline = now
            if self.writer and now - flushed >= self.flush_s:
                self._flush()
                flushed = now
            self._stop.wait(deadline - now)
        self._flush()

    def _tick(self) -> None:
        t_mono, stamp = time.monotonic(), dt.datetime.now(dt.timezone.utc)
        open_windows = self.windows()
        label = open_windows[-1] if open_windows else None
        cpu_j, dram_j = self._read_rapl()
        tracked = [w for w in open_windows if w in TRACKED]
        energy = t_mono - self._counter_read_at >= COUNTER_EVERY_S - 0.5 / self.hz
        if energy:
            self._counter_read_at = t_mono
        for gpu in self.gpus:
            try:
                row = read_gpu(gpu, energy)
            except NvmlFault as e:
                self._note(str(e))
                continue
            self._integrate(gpu.uuid, t_mono, row["power_w"])
            for w in tracked:
                self.stats.setdefault(w, {}).setdefault(gpu.uuid, WindowStats()).add(t_mono, row)
            if self.write_rows:
                self._rows.append({**self.node_fields, "timestamp": stamp, "window": label, **row,
                                   **self.constant.get(gpu.uuid, {}), "cpu_energy_j": cpu_j, "dram_energy_j": dram_j})
        if self.write_rows and not self.gpus:  # a node without GPUs: one row per tick for RAPL
            self._rows.append({**self.node_fields, "timestamp": stamp, "window": label,
                               "cpu_energy_j": cpu_j, "dram_energy_j": dram_j})
        self.ticks += 1

    def _read_rapl(self) -> tuple[float | None, float | None]:
        if self.rapl is None:
            return None, None
        try:
            return self.rapl.read_j()
        except (OSError, ValueError) as e:
            self._note(f"RAPL read failed: {e}")
            return None, None

    def _integrate(self, uuid: str, t: float, power_w: float | None) -> None:
        with self._lock:
            joules, t0, p0 = self._integral.get(uuid, (0.0, t, None))
            if p0 is not None and power_w is not None:
                joules += (p0 + power_w) / 2 * (t - t0)
            self._integral[uuid] = (joules, t, power_w if power_w is not None else p0)

    def _flush(self) -> None:
        if not self._rows or self.writer is None:
            return
        rows, self._rows = self._rows, []
        try:
            self.writer.write(rows)
        except OSError as e:  # keep the rows for the next try; the point goes on
            self._rows = rows + self._rows
            self._note(f"writing a samples part failed: {e}")

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)
            log.warning("sampler: %s", text)
