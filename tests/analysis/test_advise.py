"""The advice on synthetic sweeps with a known answer: front, recommendation, ties, a constraint no point meets,
a failed point, a single-value axis, the paper's default and the savings with their intervals."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import energybench.results as results
from energybench.advise import main
from energybench.analysis import Constraints, advise

from .conftest import REPO
from .synthetic_points import Spec, write_sweep

# batch, shards, J/token, TPOT s, tokens/s. b128 at shards 1 and 2 measure exactly the same: a tie that fewer
# GPUs breaks. b64 s2 is the fastest; b64 s2 is dominated on energy vs TPOT by b16 s1; b256 failed (OOM).
GRID = [Spec(16, 1, 0.60, 0.020, 500), Spec(64, 1, 0.35, 0.025, 1000), Spec(128, 1, 0.25, 0.030, 1400),
        Spec(16, 2, 1.20, 0.018, 450), Spec(64, 2, 0.62, 0.024, 1500), Spec(128, 2, 0.25, 0.030, 1400),
        Spec(256, 1, status="failed", reason="CUDA out of memory. Tried to allocate 2.00 GiB")]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sweep(GRID, tmp_path_factory.mktemp("advise"))


@pytest.fixture(scope="module")
def frames(sweep: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    return results.points(sweep), results.batches(sweep, measured_only=True, with_config=False)


def one(frames, constraints: Constraints = Constraints(), **kw):
    advices = advise(*frames, constraints, n=300, **kw)
    assert len(advices) == 1, [a.label for a in advices]  # the failed point joins its workload
    return advices[0]


def knobs(row: pd.Series) -> tuple[int, int]:
    return int(row["batch"]), int(row["shards"])


def test_unconstrained_the_lowest_energy_wins_and_the_tie_goes_to_fewer_gpus(frames) -> None:
    a = one(frames)
    assert knobs(a.recommended) == (128, 1)
    assert any("2 points tie" in n and a.recommended["point_id"] in n for n in a.notes)
    assert knobs(a.default) == (64, 1) and knobs(a.fastest) == (64, 2)
    e = a.savings[a.savings["metric"] == "energy_per_token_j"].set_index("against")
    assert e.loc["the paper's default", "change"] == pytest.approx(0.25 / 0.35 - 1)
    assert e.loc["the fastest point", "change"] == pytest.approx(0.25 / 0.62 - 1)
    lo, hi = e.loc["the paper's default", ["lo", "hi"]]
    assert lo < 0.25 / 0.35 - 1 < hi < 0  # batches spread +-10 %: a real interval, and the saving is real
    t = a.savings[(a.savings["metric"] == "tpot_s") & (a.savings["against"] == "the paper's default")]
    assert t["change"].iloc[0] == pytest.approx(0.030 / 0.025 - 1)
    assert a.sentence.startswith("batch 128 at shards 1 uses 29 % less energy per token than the paper's default "
                                 "(batch 64 at shards 1)") and "at +20 % TPOT" in a.sentence


def test_the_tie_break_does_not_depend_on_row_order(frames) -> None:
    points, batches = frames
    shuffled = points.iloc[::-1].reset_index(drop=True)
    assert one((shuffled, batches)).recommended["point_id"] == one(frames).recommended["point_id"]


def test_fronts_are_the_non_dominated_measured_points(frames) -> None:
    p = one(frames).points.set_index(["batch", "shards"])
    tpot_front = {k for k, on in p["on_front_tpot_s"].items() if on}
    assert tpot_front == {(16, 2), (16, 1), (64, 1), (128, 1), (128, 2)}  # b64 s2: b16 s1 is faster and cheaper
    assert {k for k, on in p["on_front_tokens_per_s"].items() if on} == {(128, 1), (128, 2), (64, 2)}


def test_a_constraint_selects_among_the_points_that_meet_it(frames) -> None:
    assert knobs(one(frames, Constraints(max_tpot_s=0.026)).recommended) == (64, 1)
    a = one(frames, Constraints(min_tokens_per_s=1200, max_gpus=1))
    assert knobs(a.recommended) == (128, 1)
    assert one(frames, Constraints(max_tpot_s=0.026)).sentence.startswith("batch 64 at shards 1 is the paper's default")


def test_a_constraint_no_point_meets_names_the_closest_and_by_how_much(frames) -> None:
    a = one(frames, Constraints(max_tpot_s=0.010))
    assert a.recommended is None and knobs(a.closest) == (16, 2)
    assert a.sentence.startswith("No measured point meets TPOT ≤ 0.01 s; the closest is batch 16 at shards 2")
    assert "TPOT 0.018 s against the limit 0.01 s (+80 %)" in a.sentence
    b = one(frames, Constraints(min_tokens_per_s=5000))
    assert knobs(b.closest) == (64, 2) and "(+233 %)" in b.sentence  # 5000 / 1500 - 1


def test_the_failed_point_is_listed_not_compared(frames) -> None:
    a = one(frames)
    failed = a.not_measured
    assert list(failed["batch"]) == [256] and failed["status"].iloc[0] == "failed"
    assert "out of memory" in failed["reason"].iloc[0]
    assert 256 not in set(a.points["batch"])


def test_single_value_axes_are_called_too_sparse(frames) -> None:
    notes = " ".join(one(frames).notes)
    assert "single power_cap_w" in notes and "single engine" in notes
    assert "single batch" not in notes and "single shards" not in notes


def test_per_response_and_determinism(frames) -> None:
    a, b = one(frames, per="response", seed=3), one(frames, per="response", seed=3)
    assert a.energy_metric == "energy_per_response_j" and "energy per response" in a.sentence
    pd.testing.assert_frame_equal(a.savings, b.savings)
    assert not a.savings.equals(one(frames, per="response", seed=4).savings)


def test_the_default_stands_in_with_the_highest_cap_and_is_missing_without_batch_64(tmp_path: Path) -> None:
    capped = write_sweep([Spec(64, 1, 0.4, power_cap=250.0), Spec(64, 1, 0.5, power_cap=300.0),
                          Spec(32, 1, 0.45, power_cap=300.0)], tmp_path / "a")
    a = one((results.points(capped), results.batches(capped)))
    assert a.default["power_cap_w"] == 300.0 and any("highest cap (300 W)" in n for n in a.notes)
    assert knobs(a.recommended) == (64, 1) and a.recommended["power_cap_w"] == 250.0
    no64 = write_sweep([Spec(16, 1, 0.6), Spec(32, 1, 0.5)], tmp_path / "b")
    b = one((results.points(no64), results.batches(no64)))
    assert b.default is None and any("batch 64) was not measured" in n for n in b.notes)


def test_one_batch_gives_no_interval_and_says_so(tmp_path: Path) -> None:
    sweep = write_sweep([Spec(64, 1, 0.35, batches=1), Spec(128, 1, 0.25)], tmp_path)
    a = one((results.points(sweep), results.batches(sweep)))
    e = a.savings[a.savings["metric"] == "energy_per_token_j"].iloc[0]
    assert e["change"] == pytest.approx(0.25 / 0.35 - 1) and pd.isna(e["lo"]) and pd.isna(e["hi"])
    assert "no interval" in a.sentence and any("fewer than two batches" in n for n in a.notes)


def test_cli_prints_the_advice_and_rejects_bad_input(sweep: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([str(sweep), "--bootstrap", "200", "--carbon-g-per-kwh", "400", "--usd-per-kwh", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "uses 29 % less energy per token than the paper's default" in out
    assert "CUDA out of memory" in out and "carbon_intensity_g_per_kwh = 400" in out
    assert "co2_per_token_g" in out and "cost_per_mtoken_usd" in out
    for bad, what in ((["--max-tpot-s", "-1"], "--max-tpot-s=-1"), (["--pue", "0.9"], "--pue=0.9"),
                      (["--bootstrap", "-5"], "--bootstrap=-5")):
        assert main([str(sweep), *bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and what in err[0]
    assert main([str(sweep / "nope")]) == 2 and "no such results directory" in capsys.readouterr().err


def test_cli_on_the_committed_h200_sweep() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "energybench.advise", "docs/benchmarks/sweep-h200x2/h100x2",
                           "--max-tpot-s", "0.03", "--bootstrap", "200"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    points = results.points(REPO / "docs/benchmarks/sweep-h200x2/h100x2")
    ok = points[points["tpot_s"] <= 0.03].sort_values("energy_per_token_j").iloc[0]  # the answer, from the records
    assert f"batch {ok['batch']} at shards {ok['shards']}" in proc.stdout.split("==")[2].splitlines()[1]
    assert "highest cap (700 W) stands in" in proc.stdout


def test_a_runner_up_within_the_uncertainty_is_named(tmp_path: Path) -> None:
    close = write_sweep([Spec(64, 1, 0.35), Spec(128, 1, 0.34), Spec(16, 1, 0.9)], tmp_path / "close")
    a = one((results.points(close), results.batches(close)))
    assert knobs(a.recommended) == (128, 1)
    assert any("runner-up, batch 64 at shards 1, is within the uncertainty" in n for n in a.notes), a.notes
    apart = write_sweep([Spec(64, 1, 0.35), Spec(128, 1, 0.20)], tmp_path / "apart")
    b = one((results.points(apart), results.batches(apart)))
    assert not any("runner-up" in n for n in b.notes)
