"""Continuous batching: the same tokens as one-at-a-time generation, slots refilled in arrival order at the
next step, never more live sequences than slots, no request before its arrival, idle waits."""

from __future__ import annotations

import pytest
import torch

from energybench.engine import NoHooks, Sampling
from energybench.engine.continuous import ContinuousEngine, Edge, Request, Step
from energybench.engine.fast import FastEngine
from energybench.model.build import build_model
from tiny import CPU, TINY, one_process, prompts_of

GREEDY = Sampling(temperature=0.0, top_p=0.95)
LENS = [5, 17, 9, 30, 3, 12, 25, 8, 14, 6]
LIMITS = [7, 12, 3, 20, 9, 5, 16, 11, 4, 10]


class Recorder:
    def __init__(self) -> None:
        self.edges: list[Edge] = []
        self.steps: list[Step] = []

    def edge(self, edge: Edge) -> None:
        self.edges.append(edge)

    def step(self, step: Step) -> None:
        self.steps.append(step)


@pytest.fixture
def model():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # spinning OpenMP threads on a busy 2-core machine stall steps by 0.5 s
    with one_process():
        m = build_model(TINY, CPU, torch.float32, seed=7)
        m.setup_caches(4, 128)  # 4 slots
        yield m
    torch.set_num_threads(threads)


def serve(model, arrivals: list[float], prefill_tokens: int = 10):
    prompts = prompts_of(LENS, TINY.vocab_size, seed=3)
    requests = [Request(i, p, lim, t) for i, (p, lim, t) in enumerate(zip(prompts, LIMITS, arrivals))]
    engine = ContinuousEngine(model, GREEDY, torch.Generator().manual_seed(0))
    recorder = Recorder()
    return engine.serve(requests, recorder, prefill_tokens), recorder, prompts


@pytest.mark.parametrize("prefill_tokens", [4, 10, 512])
def test_every_request_gets_the_tokens_it_gets_alone(model, prefill_tokens: int) -> None:
    # all arrive at once into 4 slots: queueing, refills, prompts longer than the budget in chunks
    traces, recorder, prompts = serve(model, [0.0] * len(LENS), prefill_tokens)
    alone = FastEngine(model, GREEDY, torch.Generator().manual_seed(0))
    for trace, prompt, limit in zip(traces, prompts, LIMITS):
        assert trace.ids == alone.generate([prompt], [limit], NoHooks()).outputs[0], trace.index
        assert trace.output_tokens == len(trace.ids)
    chunks = [s for s in recorder.steps if s.kind == "prefill"]
    assert max(sum(t for _, t in s.tokens) for s in chunks) <= prefill_tokens
    fed = {}
    for s in chunks:
        for r, t in s.tokens:
            fed[r] = fed.get(r, 0) + t
    assert fed == dict(enumerate(LENS))  # every prompt token prefilled exactly once


def test_freed_slots_are_refilled_at_the_next_step_in_arrival_order(model) -> None:
    traces, recorder, _ = serve(model, [0.0] * len(LENS))
    admitted = [t.admitted_s for t in traces]
    assert admitted == sorted(admitted)  # first come, first served
    assert all(s.live <= 4 for s in recorder.steps) and max(s.live for s in recorder.steps) == 4
    ends = sorted(s.end_s for s in recorder.steps)
    finishes = sorted(t.finished_s for t in traces)
    for k, trace in enumerate(traces[4:]):  # the (k+1)-th slot to free goes to request 4 + k
        freed = finishes[k]
        next_step_end = next(e for e in ends if e > freed)
        assert freed <= trace.admitted_s < next_step_end, (trace.index, freed, trace.admitted_s)
    for t in traces:
        assert t.admitted_s <= t.first_token_s <= t.finished_s


def test_requests_wait_for_their_arrival_and_an_empty_engine_waits_idle(model) -> None:
    arrivals = [0.0, 0.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0]
    traces, recorder, _ = serve(model, arrivals)
    for t in traces:
        assert t.admitted_s >= t.arrival_s
    idle = [s for s in recorder.steps if s.kind == "idle"]
    assert idle and all(s.tokens == () and s.live == 0 for s in idle)  # the tiny model is done long before 1 s
    for s in idle:  # a wait ends at the arrival it waited for
        assert any(s.end_s - s.duration_s < a <= s.end_s for a in arrivals), (s.end_s, s.duration_s)
    arrived = [e.arrived for e in recorder.edges]
    assert arrived == sorted(arrived) and arrived[-1] == len(LENS)
