"""Timing a captured CUDA graph: the median of single replays, each between two CUDA events."""

from __future__ import annotations

import statistics


def replay_median_ms(graph, repeats: int) -> float:
    """Median milliseconds of one `graph.replay()` (a torch.cuda.CUDAGraph), over `repeats` replays."""
    import torch

    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)
