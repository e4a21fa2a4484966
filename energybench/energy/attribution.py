"""Energy of each engine step and each request of an online point, from counter reads at step edges.

The rule (docs/methodology.md): each counter's growth between two reads is split over the steps between
them in proportion to their durations; each step's energy over the requests it fed in proportion to their
tokens in it (prompt tokens in a prefill, one per sequence in a decode); the energy of steps that fed no
request (idle waits) over every request of the window in proportion to its tokens in the window. Every
joule the counters record in a window goes to some request of it, so the requests' shares sum to the
window's energy.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

from energybench.energy.meter import Count, delta_j

Read = tuple[int, dict[str, "Count | None"]]  # (steps done when read, counter key -> cumulative count)


def step_energy_j(durations_s: Sequence[float], reads: Sequence[Read]) -> list[float | None]:
    """Energy of each step, J, summed over every counter of `reads` (one node's or several nodes'; each key's
    reads at strictly increasing boundaries). None for a step some counter did not cover or could not measure
    (unreadable, restarted); all None when no counter was read."""
    n = len(durations_s)
    energy, unknown = [0.0] * n, [False] * n
    keys = sorted({key for _, counts in reads for key in counts})
    for key in keys:
        series = sorted(((b, counts[key]) for b, counts in reads if key in counts), key=lambda x: x[0])
        covered = [False] * n
        for (b0, c0), (b1, c1) in zip(series, series[1:]):
            assert b1 > b0, f"{key}: two reads at step boundary {b0}"
            d = delta_j(c0, c1)
            span = range(b0, min(b1, n))
            total_s = sum(durations_s[s] for s in span)
            for s in span:
                covered[s] = True
                if d is None:
                    unknown[s] = True
                else:
                    energy[s] += d * (durations_s[s] / total_s if total_s > 0 else 1 / len(span))
        unknown = [u or not c for u, c in zip(unknown, covered)]
    if not keys:
        return [None] * n
    return [None if u else e for e, u in zip(energy, unknown)]


def request_energy_j(step_j: Sequence[float | None], shares: Sequence[Sequence[tuple[int, int]]],
                     start: int, stop: int) -> dict[int, float] | None:
    """Request index -> energy of steps [start, stop), J, by the rule above. None where a step's energy is
    unknown, or when energy was spent on steps without tokens in a span that fed no request at all."""
    span = range(start, stop)
    if any(step_j[s] is None for s in span):
        return None
    out: dict[int, float] = defaultdict(float)
    tokens: dict[int, int] = defaultdict(int)
    pool_j = 0.0
    for s in span:
        total = sum(t for _, t in shares[s])
        if total == 0:
            pool_j += step_j[s]  # type: ignore[operator]
            continue
        for request, t in shares[s]:
            out[request] += step_j[s] * t / total  # type: ignore[operator]
            tokens[request] += t
    fed = sum(tokens.values())
    if pool_j and not fed:
        return None
    for request, t in tokens.items():
        out[request] += pool_j * t / fed
    return dict(out)
