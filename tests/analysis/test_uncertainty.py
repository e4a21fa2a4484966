"""Bootstrap over batches: recomputed as the point computes its metrics, seeded per point, honest about one batch."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from energybench.analysis.uncertainty import bootstrap_points, relative_difference


def frame(point: str, energy_j, tokens, warmup=None, attempt=None, **extra) -> pd.DataFrame:
    n = len(energy_j)
    return pd.DataFrame({"point_id": point, "warmup": warmup or [False] * n, "attempt": attempt or [1] * n,
                         "energy_j": energy_j, "tokens": tokens, "responses": [4] * n,
                         "duration_s": extra.get("duration_s", [1.0] * n), "ttft_s": extra.get("ttft_s", [0.1] * n),
                         "tpot_s": extra.get("tpot_s", [0.02] * n)})


def test_the_value_is_a_ratio_of_sums_and_equal_batches_give_a_zero_width_interval() -> None:
    b = frame("p", [100.0, 300.0], [100, 100])  # J/token 1 and 3, but by tokens: 400 / 200
    r = bootstrap_points(b, ["energy_per_token_j"]).iloc[0]
    assert r["value"] == 2.0 and r["n_batches"] == 2 and r["lo"] < 2.0 < r["hi"]
    same = bootstrap_points(frame("q", [50.0] * 5, [100] * 5), ["energy_per_token_j", "tpot_s"])
    assert (same["lo"] == same["value"]).all() and (same["hi"] == same["value"]).all()


def test_the_interval_has_the_width_the_spread_of_the_batches_implies() -> None:
    rng = np.random.default_rng(7)
    k, sd = 200, 0.1
    b = frame("p", (1 + sd * rng.standard_normal(k)) * 100, [100] * k)
    r = bootstrap_points(b, ["energy_per_token_j"], n=4000).iloc[0]
    expected = 2 * 1.96 * sd / np.sqrt(k)  # normal theory for a mean of k batches
    assert r["hi"] - r["lo"] == pytest.approx(expected, rel=0.15)


def test_warmup_and_earlier_attempts_are_left_out() -> None:
    b = frame("p", [999.0, 10.0, 30.0, 100.0, 300.0], [100] * 5, warmup=[True, False, False, False, False],
              attempt=[2, 1, 1, 2, 2])
    r = bootstrap_points(b, ["energy_per_token_j"]).iloc[0]
    assert r["value"] == 2.0 and r["n_batches"] == 2


def test_seeded_per_point_so_other_points_do_not_move_an_interval() -> None:
    p = frame("p", [100.0, 120.0, 90.0, 140.0], [100] * 4)
    alone = bootstrap_points(p, seed=1)
    together = bootstrap_points(pd.concat([frame("a", [1.0, 2.0], [1, 1]), p]), seed=1)
    pd.testing.assert_frame_equal(alone.reset_index(drop=True),
                                  together[together["point_id"] == "p"].reset_index(drop=True))
    assert not bootstrap_points(p, seed=2).equals(alone)


def test_one_batch_has_no_interval() -> None:
    r = bootstrap_points(frame("p", [100.0], [50]), ["energy_per_token_j"]).iloc[0]
    assert r["value"] == 2.0 and np.isnan(r["lo"]) and np.isnan(r["hi"])


def test_relative_difference_of_two_points() -> None:
    rng = np.random.default_rng(1)
    a = frame("a", 60 + rng.standard_normal(8), [100] * 8)
    b = frame("b", 100 + rng.standard_normal(8), [100] * 8)
    both = pd.concat([a, b])
    value, lo, hi = relative_difference(both, "a", "b", "energy_per_token_j")
    assert value == pytest.approx(a["energy_j"].sum() / b["energy_j"].sum() - 1)
    assert lo < value < hi < 0 and hi - lo < 0.05
    assert relative_difference(both, "a", "b", "energy_per_token_j") == (value, lo, hi)  # deterministic
    one = pd.concat([a, frame("c", [100.0], [100])])
    assert np.isnan(relative_difference(one, "a", "c", "energy_per_token_j")[1])
    with pytest.raises(ValueError, match="no measured batches for point zz"):
        relative_difference(both, "a", "zz", "energy_per_token_j")


def test_an_unknown_metric_is_an_error_naming_the_choices() -> None:
    with pytest.raises(ValueError, match="'joules' cannot be bootstrapped; choose from energy_per_token_j"):
        bootstrap_points(frame("p", [1.0, 2.0], [1, 1]), ["joules"])
