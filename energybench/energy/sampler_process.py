"""The node's sampler process: reads the job's GPUs and RAPL at a fixed rate, writes the timeline, answers its leader.

Run by energybench.energy.sampler.Sampler as `python -m energybench.energy.sampler_process --fd N --parent PID`:
it opens NVML (by the GPUs' UUIDs) and RAPL itself, so the measured process does no per-tick work. It talks to
the leader over one socket (multiprocessing.connection, pickled tuples):

    leader -> process: config dict (first), ("windows", names), ("read",), ("stop",)
    process -> leader: ("ready", None) | ("error", text), ("read", {...}), ("results", {...})

It stops when told, on SIGTERM, or when its parent is gone (EOF, or os.getppid() changes), writing its last
part first; SIGINT is ignored (the leader decides). Each part is written whole and renamed, so a SIGKILL leaves
only complete parts. Imports NVML, RAPL and pyarrow, never torch.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import resource
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

from energybench.device.nvml import GpuInfo, Nvml, NvmlFault
from energybench.device.rapl import Rapl
from energybench.energy.samples import PartWriter, WindowStats, read_gpu

log = logging.getLogger("energybench.energy")

TRACKED = ("generation",)  # windows whose per-GPU statistics are kept (idle power comes from the counters)
COUNTER_EVERY_S = 1.0  # the energy counter is read at most this often (~4 ms a read on H100; it steps every 0.1 s)
PARENT_POLL_S = 0.5  # how often the process looks for a message or a dead parent


class Ticker:
    """Reads every GPU of the job (and RAPL) `hz` times a second in a thread of this process.

    With `out_dir`, rows (schema SAMPLES, one per GPU per tick) stream to `part-<k>.parquet` every `flush_s`.
    The energy counter is read once every COUNTER_EVERY_S (energy_mj is null on the rows between), and at the
    first tick of each TRACKED window, so that a window longer than COUNTER_EVERY_S (plus a tick) always holds
    two readings for its cross-check, whatever the phase of the schedule when it opens. Keeps,
    per GPU, statistics of the TRACKED windows and a running power integral (the energy of GPUs without a
    counter). `windows` (set by the leader at each edge) labels the rows.
    """

    def __init__(self, gpus: list, rapl: Rapl | None, hz: float, out_dir: Path | None, flush_s: float,
                 constant: dict[str, dict], node_fields: dict) -> None:
        self.gpus, self.rapl, self.hz, self.flush_s = gpus, rapl, hz, flush_s
        self.writer = PartWriter(out_dir) if out_dir is not None else None
        self.constant = constant  # per GPU UUID: columns repeated on its rows (power_cap_w, ...)
        self.node_fields = node_fields  # point_id, attempt (the node is the directory: node=<host>)
        self.windows: tuple[str, ...] = ()  # open windows, outermost first
        self.notes: list[str] = []
        self.stats: dict[str, dict[str, WindowStats]] = {}  # window -> GPU UUID -> statistics
        self.ticks = 0
        self._counter_read_at = float("-inf")
        self._counter_due = False  # a TRACKED window opened: read the counter at the next tick
        self._rows: list[dict] = []
        self._integral: dict[str, tuple[float, float, float | None]] = {}  # uuid -> (joules, t, last power)
        self._lock = threading.Lock()  # windows, integrals and notes: shared with the thread answering the leader

    def run(self, stop: threading.Event) -> None:
        """Tick on absolute deadlines until `stop` (a late tick is skipped, not bunched); then write the last part."""
        period, flushed = 1.0 / self.hz, time.monotonic()
        deadline = time.monotonic()
        while True:
            deadline += period
            now = time.monotonic()
            if deadline < now:
                deadline = now
            if stop.wait(deadline - now):
                break
            self.tick()
            if self.writer and time.monotonic() - flushed >= self.flush_s:
                self.flush()
                flushed = time.monotonic()
        self.flush()

    def tick(self) -> None:
        t_mono, stamp = time.monotonic(), dt.datetime.now(dt.timezone.utc)
        with self._lock:  # the windows and the read they may have asked for, together
            windows = self.windows
            due, self._counter_due = self._counter_due, False
        label = windows[-1] if windows else None
        cpu_j, dram_j = self.read_rapl()
        tracked = [w for w in windows if w in TRACKED]
        energy = due or t_mono - self._counter_read_at >= COUNTER_EVERY_S - 0.5 / self.hz
        if energy:
            self._counter_read_at = t_mono
        rapl = {"cpu_energy_j": cpu_j, "dram_energy_j": dram_j}
        for gpu in self.gpus:
            try:
                row = read_gpu(gpu, energy)
            except NvmlFault as e:
                self.note(str(e))
                continue
            self._integrate(gpu.uuid, t_mono, row["power_w"])
            for w in tracked:
                self.stats.setdefault(w, {}).setdefault(gpu.uuid, WindowStats()).add(t_mono, row)
            if self.writer:
                self._rows.append({**self.node_fields, "timestamp": stamp, "window": label, **row,
                                   **self.constant.get(gpu.uuid, {}), **rapl})
        if self.writer and not self.gpus:  # a node without GPUs: one row per tick for RAPL
            self._rows.append({**self.node_fields, "timestamp": stamp, "window": label, **rapl})
        self.ticks += 1

    def read_rapl(self) -> tuple[float | None, float | None]:
        if self.rapl is None:
            return None, None
        try:
            return self.rapl.read_j()
        except (OSError, ValueError) as e:
            self.note(f"RAPL read failed: {e}")
            return None, None

    def read(self) -> dict:
        """At an edge: RAPL package and DRAM joules since start, and each GPU's power integral up to now."""
        cpu_j, dram_j = self.read_rapl()
        now = time.monotonic()
        with self._lock:
            gpu_j = {uuid: j + (p or 0.0) * (now - t) for uuid, (j, t, p) in self._integral.items()}
        return {"cpu_j": cpu_j, "dram_j": dram_j, "gpu_j": gpu_j}

    def set_windows(self, windows: tuple[str, ...]) -> None:
        with self._lock:
            if any(w in TRACKED and w not in self.windows for w in windows):
                self._counter_due = True
            self.windows = tuple(windows)

    def results(self) -> dict:
        """Per-window statistics (summaries), notes (with refused reads), ticks and this process's CPU seconds."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {"stats": {w: {uuid: s.summary() for uuid, s in per.items()} for w, per in self.stats.items()},
                "notes": self.notes + [f for gpu in self.gpus for f in gpu.faults], "ticks": self.ticks,
                "cpu_s": usage.ru_utime + usage.ru_stime}

    def _integrate(self, uuid: str, t: float, power_w: float | None) -> None:
        with self._lock:
            joules, t0, p0 = self._integral.get(uuid, (0.0, t, None))
            if p0 is not None and power_w is not None:
                joules += (p0 + power_w) / 2 * (t - t0)
            self._integral[uuid] = (joules, t, power_w if power_w is not None else p0)

    def flush(self) -> None:
        if not self._rows or self.writer is None:
            return
        rows, self._rows = self._rows, []
        try:
            self.writer.write(rows)
        except OSError as e:  # keep the rows for the next try; sampling goes on
            self._rows = rows + self._rows
            self.note(f"writing a samples part failed: {e}")

    def note(self, text: str) -> None:
        with self._lock:
            if text in self.notes:
                return
            self.notes.append(text)
        log.warning("sampler: %s", text)


def open_ticker(config: dict, nvml: Nvml | None) -> Ticker:
    """The Ticker a leader's config asks for: GPUs opened by UUID in `nvml`, RAPL opened again here."""
    gpus = [nvml.gpu(GpuInfo(*g)) for g in config["gpus"]] if nvml is not None else []
    out_dir = Path(config["out_dir"]) if config["out_dir"] else None
    return Ticker(gpus, Rapl.open() if config["rapl"] else None, config["hz"], out_dir, config["flush_s"],
                  config["constant"], config["node_fields"])


def serve(conn: Connection, ticker: Ticker, stop: threading.Event, parent: int) -> bool:
    """Answer the leader until it says stop (True), or it is gone or SIGTERM came (False)."""
    while not stop.is_set() and os.getppid() == parent:
        try:
            if not conn.poll(PARENT_POLL_S):
                continue
            kind, *body = conn.recv()
            if kind == "windows":
                ticker.set_windows(body[0])
            elif kind == "read":
                conn.send(("read", ticker.read()))
            elif kind == "stop":
                return True
        except (EOFError, OSError):  # the leader is gone
            return False
        except Exception:  # noqa: BLE001 -- a garbled message or a bug: stop as if the leader were gone
            log.exception("sampler: giving up on the leader's connection")
            return False
    return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fd", type=int, required=True, help="the socket to the leader (inherited)")
    ap.add_argument("--parent", type=int, required=True, help="the leader's pid: exit when it is gone")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s sampler[%(process)d] %(levelname)s %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    conn = Connection(args.fd)
    nvml = None
    try:
        config = conn.recv()
        nvml = Nvml() if config["gpus"] else None
        ticker = open_ticker(config, nvml)
        ticker.tick()  # the first sample before "ready": power integrals exist from the first edge on
    except Exception as e:  # noqa: BLE001 -- every start-up failure goes back to the leader as text
        _send(conn, ("error", f"{type(e).__name__}: {e}"))
        return 1
    thread = threading.Thread(target=ticker.run, args=(stop,), name="ticks", daemon=True)
    thread.start()
    told = False
    try:
        told = _send(conn, ("ready", None)) and serve(conn, ticker, stop, args.parent)
    finally:
        stop.set()
        thread.join()  # the last part is written before the leader hears back
    if told:
        _send(conn, ("results", ticker.results()))
    if nvml is not None:
        nvml.close()
    return 0


def _send(conn: Connection, message: tuple) -> bool:
    try:
        conn.send(message)
        return True
    except OSError:  # the leader is gone
        return False


if __name__ == "__main__":
    sys.exit(main())
