"""analysis.findings on the committed H200 records: values with their intervals, points without one."""

from __future__ import annotations

from pathlib import Path

import pytest

from energybench.analysis import findings

H200 = Path(__file__).resolve().parents[2] / "docs" / "results" / "h200"
pytestmark = pytest.mark.skipif(not H200.is_dir(), reason="docs/results/h200 not in this checkout")


def _points():
    return findings._load(str(H200))[0]


def test_one_batch_point_has_no_interval_and_two_batches_have_one():
    pts = _points()
    one = pts[pts["batches"] == 1]["point_id"].iloc[0]
    two = pts[pts["batches"] == 2]["point_id"].iloc[0]
    assert findings.with_interval(H200, one, "energy_per_token_j", ".3f").endswith(f"({findings.NO_INTERVAL})")
    text = findings.with_interval(H200, two, "energy_per_token_j", ".6f")
    value, lo, hi = (float(x) for x in text.replace("[", "").replace("]", "").replace(",", "").split())
    assert lo <= value <= hi and lo < hi


def test_ratio_of_two_points_is_their_values_ratio_inside_its_interval():
    pts = _points()[lambda d: d["batches"] >= 2].set_index("point_id")
    a, b = pts.index[0], pts.index[1]
    text = findings.ratio(H200, a, b, "tokens_per_s")
    value, lo, hi = (float(x) for x in text.replace("[", "").replace("]", "").replace(",", "").split())
    assert value == pytest.approx(pts.loc[a, "tokens_per_s"] / pts.loc[b, "tokens_per_s"], abs=0.005)
    assert lo <= value <= hi and lo < hi
    back = float(findings.ratio(H200, b, a, "tokens_per_s").split()[0])
    assert back == pytest.approx(1 / value, rel=0.01)


def test_every_table_names_its_points():
    pts = _points()
    table = findings.all_points(H200, {})
    assert all(f"`{p}`" in table for p in pts["point_id"])
    assert len(table.splitlines()) == len(pts) + 2
    assert findings.TABLES["results-axis"](H200, {"axis": ["batch"]}).count("\n") >= 2
