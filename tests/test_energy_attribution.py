"""Energy attribution rule: counter intervals over steps by duration, steps over requests by tokens, idle
waits over the window's requests; nothing lost, nothing invented."""

from __future__ import annotations

import pytest

from energybench.energy.attribution import request_energy_j, step_energy_j
from energybench.energy.meter import Count


def test_each_interval_is_split_over_its_steps_by_duration_and_counters_add() -> None:
    durations = [1.0, 3.0, 2.0, 2.0]
    reads = [(0, {"gpu:a": Count(100.0), "gpu:b": Count(0.0)}),
             (2, {"gpu:a": Count(140.0)}),  # a's interval [0, 2): 40 J over 1 s + 3 s
             (4, {"gpu:a": Count(160.0), "gpu:b": Count(80.0)})]  # a: 20 J over [2, 4); b: 80 J over 8 s
    got = step_energy_j(durations, reads)
    assert got == pytest.approx([10 + 10, 30 + 30, 10 + 20, 10 + 20])
    assert sum(got) == pytest.approx(60 + 80)  # both counters' growth, all of it


def test_a_failed_or_restarted_counter_leaves_its_steps_unknown_not_zero() -> None:
    reads = [(0, {"gpu:a": Count(5.0)}), (1, {"gpu:a": None}), (2, {"gpu:a": Count(9.0)}),
             (3, {"gpu:a": Count(1.0, epoch=1)})]
    assert step_energy_j([1.0, 1.0, 1.0], reads) == [None, None, None]
    reads = [(0, {"gpu:a": Count(5.0)}), (1, {"gpu:a": Count(7.0)}), (3, {"gpu:a": Count(1.0, epoch=1)})]
    assert step_energy_j([1.0, 1.0, 1.0], reads) == [2.0, None, None]
    assert step_energy_j([1.0, 1.0], []) == [None, None]  # no meter


def test_steps_go_to_their_requests_by_tokens_and_idle_waits_to_the_window_by_tokens() -> None:
    step_j = [12.0, 6.0, 9.0, 4.0]
    shares = [((0, 30), (1, 10)),  # prefill: 30 and 10 prompt tokens
              (),  # idle wait: nobody fed
              ((0, 1), (1, 1), (2, 1)),  # decode
              ((2, 3),)]
    got = request_energy_j(step_j, shares, 0, 4)
    assert got is not None
    fed = {0: 31, 1: 11, 2: 4}  # tokens in the span; the idle 6 J go by these
    assert got == pytest.approx({0: 9 + 3 + 6 * 31 / 46, 1: 3 + 3 + 6 * 11 / 46, 2: 3 + 4 + 6 * 4 / 46})
    assert sum(got.values()) == pytest.approx(sum(step_j))
    window = request_energy_j(step_j, shares, 2, 4)
    assert window == pytest.approx({0: 3, 1: 3, 2: 7}) and sum(window.values()) == pytest.approx(13)
    assert request_energy_j([1.0, None], shares[:2], 0, 2) is None
