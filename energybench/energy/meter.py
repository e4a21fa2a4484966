"""Named measurement windows over a point's job: wall time on every rank, energy from counters on every node.

Every rank calls begin/end at the same places (the engines are SPMD). At each edge every rank
synchronizes its device and meets the others at a barrier, so the window holds all work of all
GPUs; then each node leader (local rank 0) reads its node's counters (every GPU of the job on the
node once, RAPL package and DRAM). Ends are gathered to rank 0, which sums each counter once.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch
import torch.distributed as dist

from energybench.distributed import DistEnv, gather
from energybench.util.numbers import sum_or_none

log = logging.getLogger("energybench.energy")


@dataclass(frozen=True)
class Count:
    """A cumulative counter read at an edge."""

    value_j: float  # joules since the counter's origin
    epoch: int = 0  # bumped when the counter went backwards (driver reload): deltas across epochs are invalid


class Counters(Protocol):
    """A node's cumulative counters (energy.counters.NodeCounters on the node leader)."""

    def read(self) -> dict[str, Count | None]:
        """Keys 'gpu:<uuid>', 'cpu:<node>', 'dram:<node>'; None: unreadable at this edge."""
        ...


def delta_j(c0: Count | None, c1: Count | None) -> float | None:
    """Energy between two reads of one counter; None if either is missing or the counter restarted."""
    if c0 is None or c1 is None or c0.epoch != c1.epoch or c1.value_j < c0.value_j:
        return None
    return c1.value_j - c0.value_j


def _total(values: list[float | None]) -> float | None:
    """Sum; None when nothing was metered or any part failed."""
    return sum_or_none(values) if values else None


@dataclass(frozen=True)
class Reading:
    """One closed window, seen from rank 0."""

    name: str
    duration_s: float  # wall time between the synchronized edges, rank 0
    deltas_j: dict[str, float | None] = field(default_factory=dict)  # per counter key, every node

    def _kind(self, kind: str) -> dict[str, float | None]:
        return {k.split(":", 1)[1]: v for k, v in self.deltas_j.items() if k.startswith(kind + ":")}

    @property
    def energy_j(self) -> dict[str, float | None]:
        """GPU energy per GPU UUID (None: that GPU's counter failed in this window); empty: no GPU meter."""
        return self._kind("gpu")

    @property
    def total_energy_j(self) -> float | None:
        """Sum over every GPU of the job; None where no meter ran or any GPU's reading failed (never 0)."""
        return _total(list(self.energy_j.values()))

    @property
    def cpu_energy_j(self) -> float | None:
        """RAPL package energy, all nodes; None unless every node's RAPL was read."""
        return _total(list(self._kind("cpu").values()))

    @property
    def dram_energy_j(self) -> float | None:
        return _total(list(self._kind("dram").values()))


class Meter:
    """Windows opened and closed by name on every rank; readings on rank 0 (`.readings`)."""

    def __init__(self, env: DistEnv, device: torch.device, counters: Counters | None,
                 on_windows: Callable[[tuple[str, ...]], None] | None = None) -> None:
        self.env = env
        self.device = device
        self.counters = counters if env.is_node_leader else None
        self.on_windows = on_windows  # told the open windows after each change (the node's sampler labels rows)
        self._open: dict[str, tuple[float, dict[str, Count | None]]] = {}
        self._stack: list[str] = []  # open windows, innermost last
        self.readings: list[Reading] = []
        self._pending: list[tuple[str, float, dict[str, float | None]]] = []  # closed, not gathered yet
        self.last_counts: dict[str, Count | None] = {}

    def _edge(self) -> tuple[float, dict[str, Count | None]]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        if self.env.world_size > 1:
            dist.barrier()
        counters = self.counters.read() if self.counters is not None else {}
        self.last_counts = counters  # this node's counters at the latest edge (online points attribute from them)
        return time.perf_counter(), counters

    def begin(self, name: str) -> None:
        """Open `name` at a new edge (every rank synchronizes its device and meets the others)."""
        assert name not in self._open, f"window {name!r} is already open"
        self._open[name] = self._edge()
        self._stack.append(name)
        self._tell_windows()

    def end(self, name: str) -> Reading | None:
        """Close `name`; rank 0 gets the Reading (also appended to .readings), other ranks None. Windows closed
        by `switch` since the last end are gathered with this one, in one collective."""
        self._close(name, self._edge())
        self._tell_windows()
        return self._gather_pending()

    def switch(self, closing: str, opening: str) -> None:
        """Close `closing` and open `opening` at one shared edge (prefill -> decode, rampup -> steady): one
        sync, one barrier, one counter read. The closed window's deltas stay here until the next `end`, which
        gathers them with its own, so no collective runs inside `opening`."""
        assert opening not in self._open, f"window {opening!r} is already open"
        edge = self._edge()
        self._close(closing, edge)
        self._open[opening] = edge
        self._stack.append(opening)
        self._tell_windows()

    def is_open(self, name: str) -> bool:
        return name in self._open

    def _close(self, name: str, edge: tuple[float, dict[str, Count | None]]) -> None:
        t1, c1 = edge
        self._stack.remove(name)
        t0, c0 = self._open.pop(name)
        self._pending.append((name, t1 - t0, {key: delta_j(c0.get(key), count) for key, count in c1.items()}))

    def _tell_windows(self) -> None:
        if self.on_windows is not None:
            self.on_windows(tuple(self._stack))

    def _gather_pending(self) -> Reading | None:
        pending, self._pending = self._pending, []
        deltas = [d for _, _, d in pending]
        if self.env.world_size > 1:
            merged: list[dict[str, float | None]] = [{} for _ in pending]
            for rank_deltas in gather(self.env, deltas):
                for window, part in zip(merged, rank_deltas):
                    window.update(part)  # one leader per node; each GPU and node under its own key
            deltas = merged
        if self.env.rank != 0:
            return None
        readings = [Reading(n, duration_s, d) for (n, duration_s, _), d in zip(pending, deltas)]
        self.readings.extend(readings)
        return readings[-1]

    def phase_hooks(self, prefix: str) -> "PhaseWindows":
        return PhaseWindows(self, prefix)


class PhaseWindows:
    """Engine hooks that open `<prefix>/prefill` and `<prefix>/decode` windows. Decode starts where prefill ends,
    so prefill's end is one `Meter.switch` into decode; the engine's `phase_start("decode")` that follows finds
    decode open already."""

    def __init__(self, meter: Meter, prefix: str) -> None:
        self.meter = meter
        self.prefix = prefix
        self.readings: dict[str, Reading] = {}

    def phase_start(self, phase: str) -> None:
        name = f"{self.prefix}/{phase}"
        if not (phase == "decode" and self.meter.is_open(name)):
            self.meter.begin(name)

    def phase_end(self, phase: str) -> None:
        if phase == "prefill":
            self.meter.switch(f"{self.prefix}/prefill", f"{self.prefix}/decode")
            return
        if self.meter.end(f"{self.prefix}/{phase}") is not None:
            for reading in self.meter.readings[-2:]:
                if reading.name.startswith(f"{self.prefix}/"):
                    self.readings[reading.name.rsplit("/", 1)[1]] = reading
