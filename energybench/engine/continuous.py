"""Continuous batching on the fast engine: requests join free KV-cache slots as they arrive on the wall
clock, prompts are prefilled in chunks, and decode replays the fast engine's CUDA graphs.

Slots are the rows of the static KV cache (`batch` of them). Each scheduler iteration: read the clock and
count the requests that have arrived; with nothing running and nothing waiting, sleep until the next
arrival (an `idle` step); else give each free slot (lowest first) to the next waiting request (arrival
order), prefill at most `prefill_tokens` prompt tokens of the admitted requests (one eager forward, a
`prefill` step; a longer prompt continues in the next iterations), then one decode step over every slot
that has its first token. A finished sequence frees its slot at once, so the next iteration refills it.

CUDA graphs: decode runs at the fast engine's batch buckets (powers of two up to `batch`) covering the
highest slot in use, with the graph captured for that (bucket, attention span); slots inside the bucket
that are free or still prefilling are computed and ignored (their cache writes land on positions that
their own prefill overwrites later). Admission takes the lowest free slot, so slots in use stay packed;
when nothing waits and the live slots fit a smaller bucket, they are moved to the front (`_pack`).
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.distributed as dist

from energybench.engine.base import EOS_ID
from energybench.engine.fast import FastEngine, aligned_span


@dataclass(frozen=True)
class Request:
    index: int  # position in arrival order
    prompt: list[int]  # token ids
    limit: int  # new tokens at most
    arrival_s: float  # seconds after the start of serving


@dataclass
class Trace:
    """One request's life, seconds after the start of serving (None: not reached)."""

    index: int
    prompt_tokens: int
    arrival_s: float
    admitted_s: float | None = None  # given a slot
    first_token_s: float | None = None  # end of the prefill step that sampled its first token
    finished_s: float | None = None  # end of the step that sampled its last token
    output_tokens: int = 0  # counted: up to and including EOS, at most its limit
    eos: bool = False  # ended on EOS rather than on its limit
    ids: list[int] = field(default_factory=list, repr=False)  # generated ids, counted part


@dataclass(frozen=True)
class Step:
    """One forward (prefill or decode) or one wait with nothing to run (idle)."""

    index: int
    kind: str  # prefill | decode | idle
    end_s: float  # seconds after the start of serving, after the device finished
    duration_s: float  # since the previous step's end (host scheduling included)
    rows: int  # batch rows computed (the bucket); 0 for idle
    live: int  # sequences holding a slot during the step
    tokens: tuple[tuple[int, int], ...]  # (request index, tokens it fed this step): its energy share
    new_tokens: int  # generated tokens counted in this step


@dataclass(frozen=True)
class Edge:
    """Scheduler state at an iteration's start, the same on every rank."""

    steps: int  # steps done so far
    at_s: float  # seconds after the start of serving (rank 0's clock read that counted the arrivals)
    arrived: int  # requests arrived
    filled: bool  # every slot has been in use at once
    finished: int  # requests done


class Observer(Protocol):
    def edge(self, edge: Edge) -> None: ...

    def step(self, step: Step) -> None: ...


@dataclass
class _Slot:
    request: Request
    fed: int = 0  # prompt tokens prefilled
    out: list[int] = field(default_factory=list)  # generated ids

    @property
    def decoding(self) -> bool:
        return self.fed == len(self.request.prompt)


class ContinuousEngine(FastEngine):
    """FastEngine (its `generate` serves warm-up batches) plus `serve`: requests over time."""

    def serve(self, requests: list[Request], observer: Observer, prefill_tokens: int) -> list[Trace]:
        """Run every request, admitting each no earlier than its arrival; returns their traces (in order)."""
        with torch.inference_mode():
            return _Run(self, requests, observer, prefill_tokens).loop()

    def prefill_rows(self, work: list[tuple[int, int, int]], prompts: list[list[int]]) -> torch.Tensor:
        """One eager forward over prompt chunks: `work` holds (cache row, first position, length) per chunk
        of prompts[k]; returns the token sampled after each chunk's last position [k] (kept only for chunks
        that end their prompt). Chunks are right-padded; a pad sits past its chunk (or on the cache's last
        slot), where the row's own later writes land before anything reads it."""
        k, width = len(work), max(n for _, _, n in work)
        tokens = torch.zeros((k, width), dtype=torch.long)
        positions = torch.empty((k, width), dtype=torch.long)
        for r, ((_, start, n), prompt) in enumerate(zip(work, prompts)):
            tokens[r, :n] = torch.tensor(prompt[start:start + n], dtype=torch.long)
            positions[r] = torch.clamp(torch.arange(start, start + width), max=self.max_seq - 1)
        n_slots = max(start + n for _, start, n in work)
        slot_ids = torch.arange(n_slots)
        hidden = slot_ids.view(1, 1, 1, n_slots) > positions.view(k, 1, width, 1)  # [k, 1, width, n_slots]
        mask = torch.zeros(hidden.shape, dtype=self.dtype).masked_fill_(hidden, float("-inf"))
        dev = self.device
        logits = self.eager(tokens.to(dev), positions.to(dev), n_slots=n_slots, mask=mask.to(dev),
                            logits_at=torch.tensor([n - 1 for _, _, n in work], device=dev),
                            rows=torch.tensor([row for row, _, _ in work], device=dev))
        return self.sample(logits)


class _Run:
    """The state of one `serve` call."""

    def __init__(self, engine: ContinuousEngine, requests: list[Request], observer: Observer,
                 prefill_tokens: int) -> None:
        self.e, self.requests, self.observer, self.budget = engine, requests, observer, prefill_tokens
        self.arrivals = [r.arrival_s for r in requests]
        assert self.arrivals == sorted(self.arrivals), "requests must be in arrival order"
        for r in requests:
            assert 0 < len(r.prompt) < engine.room, (r.index, len(r.prompt), engine.room)
        self.traces = [Trace(r.index, len(r.prompt), r.arrival_s) for r in requests]
        self.slots: list[_Slot | None] = [None] * engine.max_batch
        self.pos = [0] * engine.max_batch  # host copies of the decode inputs of each row
        self.tok = [0] * engine.max_batch
        self.steps: list[Step] = []
        self.admitted = self.finished = 0
        self.filled = False
        self.t0 = self.last_s = 0.0

    def now_s(self) -> float:
        return time.perf_counter() - self.t0

    def loop(self) -> list[Trace]:
        self.t0 = time.perf_counter()
        while self.finished < len(self.requests):
            at_s = self.now_s()
            arrived = self._agree(bisect.bisect_right(self.arrivals, at_s))
            self.observer.edge(Edge(len(self.steps), at_s, arrived, self.filled, self.finished))
            if self.admitted == arrived and not any(self.slots):
                time.sleep(max(0.0, self.arrivals[self.admitted] - self.now_s()))
                self._record("idle", 0, ())
                continue
            self._admit(arrived)
            if any(s is not None and not s.decoding for s in self.slots):
                self._prefill()
            if any(s is not None and s.decoding for s in self.slots):
                self._decode(waiting=arrived > self.admitted)
        return self.traces

    def _agree(self, arrived: int) -> int:
        """Rank 0's count, so every rank admits the same requests at the same step (SPMD shapes)."""
        if not (dist.is_initialized() and dist.get_world_size() > 1):
            return arrived
        count = torch.tensor([arrived], dtype=torch.long, device=self.e.device)
        dist.broadcast(count, src=0)
        return int(count.item())

    def _admit(self, arrived: int) -> None:
        for i, slot in enumerate(self.slots):
            if self.admitted >= arrived:
                break
            if slot is None:
                request = self.requests[self.admitted]
                self.slots[i] = _Slot(request)
                self.traces[request.index].admitted_s = self.now_s()
                self.pos[i], self.tok[i] = 0, 0
                self.admitted += 1
        self.filled = self.filled or all(self.slots)

    def _record(self, kind: str, rows: int, tokens: tuple[tuple[int, int], ...], new_tokens: int = 0) -> float:
        end_s = self.now_s()
        live = sum(s is not None for s in self.slots)
        self.steps.append(Step(len(self.steps), kind, end_s, end_s - self.last_s, rows, live, tokens, new_tokens))
        self.last_s = end_s
        self.observer.step(self.steps[-1])
        return end_s

    def _finish(self, i: int, end_s: float) -> None:
        slot = self.slots[i]
        assert slot is not None
        trace = self.traces[slot.request.index]
        trace.finished_s, trace.output_tokens, trace.ids = end_s, len(slot.out), slot.out
        trace.eos = slot.out[-1] == EOS_ID
        self.slots[i] = None
        self.pos[i], self.tok[i] = 0, 0  # a free row writes slot 0 of its own row, which the next prefill overwrites
        self.finished += 1

    def _done(self, slot: _Slot) -> bool:
        limit = max(1, min(slot.request.limit, self.e.room - len(slot.request.prompt)))
        return slot.out[-1] == EOS_ID or len(slot.out) >= limit

    def _prefill(self) -> None:
        """Up to `budget` prompt tokens of the slots still prefilling, in admission order; one forward."""
        pending = sorted(((i, s) for i, s in enumerate(self.slots) if s is not None and not s.decoding),
                         key=lambda item: item[1].request.index)
        work, slots, left = [], [], self.budget
        for i, slot in pending:
            n = min(len(slot.request.prompt) - slot.fed, left)
            if n <= 0:
                break
            work.append((i, slot.fed, n))
            slots.append(slot)
            left -= n
        first = self.e.prefill_rows(work, [s.request.prompt for s in slots]).tolist()  # waits for the device
        for (i, start, n), slot in zip(work, slots):
            slot.fed += n
            self.pos[i] = start + n  # a still-prefilling row's decode writes land where its next chunk goes
        shares = tuple((s.request.index, n) for (_, _, n), s in zip(work, slots))
        done = [(i, s, t) for (i, _, _), s, t in zip(work, slots, first) if s.decoding]
        end_s = self._record("prefill", len(work), shares, len(done))
        for i, slot, token in done:
            slot.out.append(token)
            self.traces[slot.request.index].first_token_s = end_s
            self.tok[i] = token
            if self._done(slot):
                self._finish(i, end_s)

    def _decode(self, waiting: bool) -> None:
        """One token for every decoding slot, at the bucket covering the highest one."""
        live = [i for i, s in enumerate(self.slots) if s is not None and s.decoding]
        if not waiting and not any(s is not None and not s.decoding for s in self.slots) \
                and self.e.bucket_for(len(live)) < self.e.bucket_for(live[-1] + 1):
            live = self._pack(live)
        b = self.e.bucket_for(live[-1] + 1)
        span = self.e.span_for(b, min(max(self.pos[i] for i in live) + 1, self.e.room))
        self.e.tok[:b, 0].copy_(torch.tensor(self.tok[:b]))
        self.e.pos[:b, 0].copy_(torch.tensor(self.pos[:b]))
        nxt = self.e.next_tokens(b, span).tolist()  # [b], waits
        slots = [self.slots[i] for i in live]
        shares = tuple((s.request.index, 1) for s in slots if s is not None)
        end_s = self._record("decode", b, shares, len(live))
        for i, slot in zip(live, slots):
            assert slot is not None
            slot.out.append(nxt[i])
            self.tok[i], self.pos[i] = nxt[i], self.pos[i] + 1
            if self._done(slot):
                self._finish(i, end_s)

    def _pack(self, live: list[int]) -> list[int]:
        """Move the decoding slots `live` (ascending, nothing prefilling) to slots 0..n-1; returns them."""
        n = len(live)
        span = aligned_span(min(max(self.pos[i] for i in live) + 1, self.e.room), self.e.max_seq)
        keep = torch.tensor(live, device=self.e.device)
        self.e.model.compact_caches(keep, span)  # the right side is gathered first: safe for j <= live[j]
        moved = [(self.slots[i], self.pos[i], self.tok[i]) for i in live]
        self.slots = [None] * len(self.slots)
        self.pos, self.tok = [0] * len(self.pos), [0] * len(self.tok)
        for j, (slot, pos, tok) in enumerate(moved):
            self.slots[j], self.pos[j], self.tok[j] = slot, pos, tok
        return list(range(n))
