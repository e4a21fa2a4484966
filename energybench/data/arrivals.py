"""Request arrival times of an online point, drawn up front from a seed (Poisson or gamma inter-arrivals)."""

from __future__ import annotations

import random


def arrival_times_s(rate: float, burstiness: float, seed: int, requests: int | None = None,
                    duration_s: float | None = None) -> list[float]:
    """Arrival times in seconds from the start of the run, ascending; the first request arrives at 0.

    Inter-arrival gaps are gamma-distributed with shape `burstiness` and mean 1/`rate` (shape 1 is the
    exponential: Poisson arrivals; below 1 burstier, above 1 more regular). `requests` arrivals, or every
    arrival before `duration_s` when `requests` is None. Raises ValueError on a non-positive rate or shape,
    or when neither count nor duration is given.
    """
    if rate <= 0 or burstiness <= 0:
        raise ValueError(f"rate={rate} and burstiness={burstiness} must be > 0")
    if requests is None and duration_s is None:
        raise ValueError("give requests or duration_s")
    draw = random.Random(seed)
    scale_s = 1.0 / (rate * burstiness)  # gamma mean = shape * scale = 1 / rate
    times, t = [0.0], 0.0
    while (len(times) < requests) if requests is not None else True:
        t += draw.gammavariate(burstiness, scale_s)
        if requests is None and t >= duration_s:  # type: ignore[operator]
            break
        times.append(t)
    return times[:requests] if requests is not None else times
