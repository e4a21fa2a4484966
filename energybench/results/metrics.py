"""Metric definitions, in one place; every table and figure uses these.

    tokens_per_s          = tokens / duration_s      (generated tokens over the measured generation window)
    power_w               = energy_j / duration_s    (energy per second, all GPUs of the job)
    energy_per_token_j    = energy_j / tokens
    energy_per_response_j = energy_j / responses
    net_energy_j          = energy_j - idle_power_w * duration_s

`duration_s` and `energy_j` cover the same window: from the first measured batch's start to the
last one's end, edges taken after synchronizing every GPU of the job. Warm-up batches are outside.
A metric whose input was not measured is None (null in Parquet), never 0.
"""

from __future__ import annotations

from statistics import fmean
from typing import Iterable


def ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den == 0:
        return None
    return num / den


def derived(tokens: int, responses: int, duration_s: float, energy_j: float | None,
            idle_power_w: float | None) -> dict[str, float | None]:
    """The per-token, per-response, per-second and idle-subtracted metrics of a window."""
    net = None if energy_j is None or idle_power_w is None else energy_j - idle_power_w * duration_s
    return {
        "tokens_per_s": ratio(tokens, duration_s),
        "power_w": ratio(energy_j, duration_s),
        "energy_per_token_j": ratio(energy_j, tokens),
        "energy_per_response_j": ratio(energy_j, responses),
        "net_energy_j": net,
    }


def sum_or_none(values: Iterable[float | None]) -> float | None:
    """Sum, or None if any part was not measured."""
    total = 0.0
    for v in values:
        if v is None:
            return None
        total += v
    return total


def mean_or_none(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return fmean(present) if present else None


def run_metrics(batches: list[dict], duration_s: float, energy_j: float | None,
                idle_power_w: float | None) -> dict:
    """Aggregate the measured (non-warm-up) batch rows of a point and its generation window."""
    tokens = sum(b["tokens"] for b in batches)
    responses = sum(b["responses"] for b in batches)
    return {
        "responses": responses,
        "prompt_tokens": sum(b["prompt_tokens"] for b in batches),
        "tokens": tokens,
        "wasted_tokens": sum(b["wasted_tokens"] for b in batches),
        "batches": len(batches),
        "duration_s": duration_s,
        "prefill_s": sum(b["prefill_s"] for b in batches),
        "decode_s": sum(b["decode_s"] for b in batches),
        "ttft_s": mean_or_none(b["ttft_s"] for b in batches),
        "tpot_s": mean_or_none(b["tpot_s"] for b in batches),
        "latency_s": mean_or_none(b["duration_s"] for b in batches),
        "energy_j": energy_j,
        "idle_power_w": idle_power_w,
        "prefill_energy_j": sum_or_none(b["prefill_energy_j"] for b in batches),
        "decode_energy_j": sum_or_none(b["decode_energy_j"] for b in batches),
        **derived(tokens, responses, duration_s, energy_j, idle_power_w),
    }
