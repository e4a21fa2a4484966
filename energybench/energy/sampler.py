"""The node leader's handle on its sampler process (energybench.energy.sampler_process): start, windows, reads, stop."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Mapping

import energybench
from energybench.device.limits import GpuLimit
from energybench.device.nvml import Gpu

log = logging.getLogger("energybench.energy")

FALLBACK_HZ = 10.0  # rate when a GPU has no energy counter (its energy is the power integral)
RAPL_HZ = 1.0  # rate that keeps RAPL's wraparound unambiguous when no timeline is written
START_TIMEOUT_S = 120.0  # spawn, imports (pyarrow, NVML) and the first sample
REPLY_TIMEOUT_S = 10.0  # an edge read, or the last part and results at stop
PACKAGE_ROOT = str(Path(energybench.__file__).resolve().parents[1])


class SamplerError(RuntimeError):
    """The sampler process did not start; the message says why."""


def sampler_hz(hz: float, fallback: bool, rapl: bool) -> float:
    """The node sampler's rate: `hz` (meter.sample_hz) when a timeline is asked for; at 0, still FALLBACK_HZ when a
    GPU must be integrated (`fallback`) or RAPL_HZ to keep RAPL's wraparound unambiguous; else 0 (no process)."""
    return hz if hz > 0 else FALLBACK_HZ if fallback else RAPL_HZ if rapl else 0.0


class Sampler:
    """One sampler per node, a separate process started by the node leader, so that measuring does not perturb the
    measured process (a sampler thread inside it slowed 2 lockstep ranks by 37 %: docs/measurement.md).

    The leader tells it the open windows at each edge (`set_windows`: one message, no reply), asks at an edge for
    RAPL and the power integrals of GPUs without an energy counter (`read`), and gets its per-window statistics,
    notes and tick count at `stop`. A lost process leaves a note and nulls, never an exception mid-point.
    """

    def __init__(self, gpus: list[Gpu], rapl: bool, hz: float, out_dir: Path | None, flush_s: float,
                 limits: Mapping[str, GpuLimit] | None = None, node_fields: dict | None = None) -> None:
        self.hz = sampler_hz(hz, any(not g.has_energy_counter for g in gpus), rapl)
        self.needed = self.hz > 0 and bool(gpus or rapl)
        self.config = {"gpus": [(g.uuid, g.index, g.name) for g in gpus], "rapl": rapl, "hz": self.hz,
                       "out_dir": str(out_dir) if hz > 0 and out_dir is not None else None, "flush_s": flush_s,
                       "constant": {uuid: lim.sample_columns() for uuid, lim in (limits or {}).items()},
                       "node_fields": node_fields or {}}
        self.notes: list[str] = []  # faults seen by the process, and its loss
        self.stats: dict[str, dict[str, dict]] = {}  # window -> GPU UUID -> WindowStats.summary(), after stop
        self.ticks = 0
        self.cpu_s: float | None = None  # CPU time the process used, after stop
        self._proc: subprocess.Popen | None = None
        self._conn: Connection | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Start the process and wait for its first sample (before the idle window); SamplerError if it fails."""
        ours, theirs = Pipe()
        path = os.pathsep.join(filter(None, [PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))  # this energybench
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "energybench.energy.sampler_process", "--fd", str(theirs.fileno()),
                 "--parent", str(os.getpid())],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": path})
        except OSError as e:
            ours.close()
            raise SamplerError(f"cannot start {sys.executable}: {e}") from None
        finally:
            theirs.close()
        self._conn = ours
        try:
            ours.send(self.config)
            kind, body = self._receive(START_TIMEOUT_S, "ready")
        except OSError as e:
            kind, body = "lost", f"it closed its end ({e})"
        if kind != "ready":
            code = self._end()
            raise SamplerError(f"the sampler process did not start: {body}"
                               + (f" (exit code {code})" if kind == "lost" else ""))

    def set_windows(self, windows: tuple[str, ...]) -> None:
        """The windows open now, outermost first (called by the meter at each edge)."""
        self._send(("windows", windows))

    def read(self) -> dict | None:
        """Now: {'cpu_j', 'dram_j' (RAPL since start, J, None if unreadable), 'gpu_j': {uuid: power integral, J}};
        None when the process is lost."""
        if not self._send(("read",)):
            return None
        kind, body = self._receive(REPLY_TIMEOUT_S, "read")
        if kind == "read":
            return body  # type: ignore[return-value]
        self._lost(body)
        return None

    def stop(self) -> None:
        """Ask for the last part and the results, and wait for the process to exit. Safe to call again."""
        if self._proc is None:
            return
        if self._send(("stop",)):
            kind, body = self._receive(REPLY_TIMEOUT_S, "results")
            if kind == "results":
                self.stats, self.ticks, self.cpu_s = body["stats"], body["ticks"], body["cpu_s"]
                self.notes += [n for n in body["notes"] if n not in self.notes]
                log.info("sampler: %d ticks at %g Hz, %.2f s CPU in its own process", self.ticks, self.hz, self.cpu_s)
            else:
                self._lost(body)
        self._end()

    def _send(self, message: tuple) -> bool:
        if self._conn is None:
            return False
        try:
            self._conn.send(message)
            return True
        except OSError as e:
            self._lost(f"sending to it failed ({e})")
            return False

    def _receive(self, timeout_s: float, expect: str) -> tuple[str, object]:
        """The next `expect` (or 'error') message, or ('lost', why) when none comes in time or the process is gone.
        Other replies are dropped: answers to a read that a signal interrupted."""
        try:
            while self._conn is not None and self._conn.poll(timeout_s):
                kind, body = self._conn.recv()
                if kind in (expect, "error"):
                    return kind, body
            why = f"no answer in {timeout_s:g} s"
        except (EOFError, OSError):
            why = "it closed its end"
        return "lost", why

    def _lost(self, why: object) -> None:
        code = self._end()
        if code is not None:
            why = f"{why}; exit code {code}" + (f" ({signal.Signals(-code).name})" if code < 0 else "")
        note = f"sampler process lost: {why}; samples, statistics and RAPL/integrated energy after that are missing"
        if note not in self.notes:
            log.warning("%s", note)
            self.notes.append(note)

    def _end(self) -> int | None:
        """Close the connection (the process then stops by itself) and reap it; its exit code."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._proc is None:
            return None
        try:
            code = self._proc.wait(timeout=REPLY_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            code = self._proc.wait()
        self._proc = None
        return code
