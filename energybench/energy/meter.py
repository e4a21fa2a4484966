"""Named measurement windows over a point's job: wall time on every rank, GPU energy from counters.

Every rank calls begin/end at the same places (the engines are SPMD). At each edge every rank
synchronizes its device and meets the others at a barrier, so the window holds all work of all
GPUs; then the node leader (local rank 0) reads its node's energy counters. Ends are gathered to
rank 0, which sums each GPU once.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Protocol

import torch
import torch.distributed as dist

from energybench.distributed import DistEnv


class EnergyCounters(Protocol):
    """The node's GPUs, read at window edges (implemented by energy.nvml on the node leader)."""

    def read_energy_mj(self) -> dict[str, float]:
        """Cumulative energy per GPU UUID, millijoules."""
        ...


@dataclass(frozen=True)
class Reading:
    """One closed window, seen from rank 0."""

    name: str
    start_s: float  # time.time() at the opening edge, rank 0
    duration_s: float  # wall time between the synchronized edges, rank 0
    energy_j: dict[str, float] = field(default_factory=dict)  # per GPU UUID, every node; empty: no meter

    @property
    def total_energy_j(self) -> float | None:
        """Sum over every GPU of the job; None where no meter ran (never 0)."""
        return sum(self.energy_j.values()) if self.energy_j else None


class Meter:
    def __init__(self, env: DistEnv, device: torch.device, counters: EnergyCounters | None) -> None:
        self.env = env
        self.device = device
        self.counters = counters if env.is_node_leader else None
        self._open: dict[str, tuple[float, float, dict[str, float]]] = {}
        self.readings: list[Reading] = []

    def _edge(self) -> tuple[float, float, dict[str, float]]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        if self.env.world_size > 1:
            dist.barrier()
        counters = self.counters.read_energy_mj() if self.counters is not None else {}
        return time.perf_counter(), time.time(), counters

    def begin(self, name: str) -> None:
        assert name not in self._open, f"window {name!r} is already open"
        self._open[name] = self._edge()

    def end(self, name: str) -> Reading | None:
        """Close `name`; rank 0 gets the Reading (also appended to .readings), other ranks None."""
        t1, _, c1 = self._edge()
        t0, wall0, c0 = self._open.pop(name)
        local = {uuid: (c1[uuid] - c0[uuid]) / 1e3 for uuid in c1 if uuid in c0}
        if self.env.world_size > 1:
            gathered: list[dict[str, float] | None] = [None] * self.env.world_size
            dist.all_gather_object(gathered, local)
            merged: dict[str, float] = {}
            for part in gathered:
                merged.update(part or {})  # one leader per node, each GPU under its own UUID
            local = merged
        if self.env.rank != 0:
            return None
        reading = Reading(name, wall0, t1 - t0, local)
        self.readings.append(reading)
        return reading

    @contextmanager
    def window(self, name: str) -> Iterator[None]:
        self.begin(name)
        yield
        self.end(name)

    def phase_hooks(self, prefix: str) -> "PhaseWindows":
        return PhaseWindows(self, prefix)


class PhaseWindows:
    """Engine hooks that open `<prefix>/prefill` and `<prefix>/decode` windows."""

    def __init__(self, meter: Meter, prefix: str) -> None:
        self.meter = meter
        self.prefix = prefix
        self.readings: dict[str, Reading] = {}

    def phase_start(self, phase: str) -> None:
        self.meter.begin(f"{self.prefix}/{phase}")

    def phase_end(self, phase: str) -> None:
        reading = self.meter.end(f"{self.prefix}/{phase}")
        if reading is not None:
            self.readings[phase] = reading
