"""What an engine is (the `Engine` protocol), what it reports for one batch, its phase hooks and step clock."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import torch

EOS_ID = 2  # LLaMA's SentencePiece end-of-sequence id


class PhaseHooks(Protocol):
    """Called on every rank at the edges of `prefill` and `decode`; meters open windows there."""

    def phase_start(self, phase: str) -> None: ...

    def phase_end(self, phase: str) -> None: ...


class Engine(Protocol):
    """A generation engine: built by its registry factory as `factory(model, sampling, generator)`
    (energybench.engine.registry), it runs batches and frees what it holds."""

    def generate(self, prompts: list[list[int]], limits: list[int], hooks: PhaseHooks) -> BatchStats:
        """Generate up to limits[i] new tokens after prompts[i] (token ids, BOS first) for every i, calling
        hooks.phase_start/phase_end around `prefill` and `decode` on every rank."""
        ...

    def close(self) -> None:
        """Free graphs, pools or processes while the model-parallel group still exists."""
        ...


class NoHooks:
    def phase_start(self, phase: str) -> None:
        pass

    def phase_end(self, phase: str) -> None:
        pass


@dataclass
class BatchStats:
    """One generate call. Times are device times between step boundaries, in seconds."""

    responses: int  # sequences in the batch
    prompt_tokens: int  # sum of prompt lengths
    max_prompt_tokens: int  # longest prompt
    tokens: int  # generated tokens counted: up to and including EOS, at most each sequence's limit
    wasted_tokens: int  # generated positions computed but not counted (past EOS or the limit)
    steps: int  # forward calls
    prefill_steps: int  # forward calls until every sequence had its first token
    prefill_s: float  # start -> every sequence has its first token (the batch's time to first token)
    decode_s: float  # the rest of the batch
    step_times_s: list[float]  # duration of each forward call (+ sampling)
    eos_stops: int  # sequences that ended on EOS rather than on their limit
    outputs: list[list[int]] = field(repr=False)  # generated ids per sequence, counted part only

    @property
    def duration_s(self) -> float:
        return self.prefill_s + self.decode_s


class StepClock:
    """Marks step boundaries without stalling the device: CUDA events on GPU, perf_counter on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.marks: list = []

    def mark(self) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def intervals_s(self) -> list[float]:
        """Seconds between consecutive marks (synchronizes the device once)."""
        if self.cuda:
            self.marks[-1].synchronize()
            return [a.elapsed_time(b) / 1e3 for a, b in zip(self.marks, self.marks[1:])]
        return [b - a for a, b in zip(self.marks, self.marks[1:])]


def count_generated(generated: list[list[int]], limits: list[int]) -> tuple[list[list[int]], int]:
    """Cut each sequence at its limit and after its first EOS; returns the kept ids and how many hit EOS."""
    kept, eos_stops = [], 0
    for ids, limit in zip(generated, limits):
        ids = ids[:limit]
        if EOS_ID in ids:
            ids = ids[: ids.index(EOS_ID) + 1]
            eos_stops += 1
        kept.append(ids)
    return kept, eos_stops
