"""Arrival times of online points: the configured rate and burstiness, reproducible from the seed."""

from __future__ import annotations

import statistics

import pytest

from energybench.data.arrivals import arrival_times_s


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in zip(times, times[1:])]


@pytest.mark.parametrize("burstiness", [1.0, 0.25, 4.0])
def test_gaps_have_the_rate_and_the_burstiness_asked_for(burstiness: float) -> None:
    times = arrival_times_s(rate=8.0, burstiness=burstiness, seed=3, requests=20_000)
    g = gaps(times)
    assert times[0] == 0.0 and min(g) >= 0  # ascending from 0
    assert statistics.fmean(g) == pytest.approx(1 / 8.0, rel=0.03)  # mean gap 1/rate
    # gamma of shape k: coefficient of variation 1/sqrt(k) (Poisson: 1)
    cv = statistics.pstdev(g) / statistics.fmean(g)
    assert cv == pytest.approx(burstiness ** -0.5, rel=0.05)


def test_burstier_arrivals_cluster_more() -> None:
    def busiest_second(burstiness: float) -> int:
        times = arrival_times_s(rate=10.0, burstiness=burstiness, seed=1, requests=5_000)
        counts: dict[int, int] = {}
        for t in times:
            counts[int(t)] = counts.get(int(t), 0) + 1
        return max(counts.values())

    assert busiest_second(0.1) > busiest_second(1.0) > busiest_second(10.0)


def test_the_same_seed_gives_the_same_arrivals_and_another_seed_others() -> None:
    a = arrival_times_s(4.0, 1.0, seed=7, requests=50)
    assert a == arrival_times_s(4.0, 1.0, seed=7, requests=50)
    assert a != arrival_times_s(4.0, 1.0, seed=8, requests=50)


def test_a_duration_keeps_the_arrivals_before_it() -> None:
    times = arrival_times_s(rate=5.0, burstiness=1.0, seed=2, duration_s=400.0)
    assert max(times) < 400.0
    assert len(times) == pytest.approx(5.0 * 400.0, rel=0.05)
    longer = arrival_times_s(rate=5.0, burstiness=1.0, seed=2, duration_s=800.0)
    assert longer[: len(times)] == times  # a longer run extends the same sequence


def test_counts_and_bad_arguments() -> None:
    assert len(arrival_times_s(1.0, 1.0, seed=1, requests=1)) == 1
    assert len(arrival_times_s(1.0, 1.0, seed=1, requests=17)) == 17
    with pytest.raises(ValueError, match="rate=0"):
        arrival_times_s(0.0, 1.0, seed=1, requests=3)
    with pytest.raises(ValueError, match="requests or duration_s"):
        arrival_times_s(1.0, 1.0, seed=1)
