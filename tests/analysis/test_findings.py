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


def test_ratio_of_a_point_with_itself_is_one():
    pid = _points()[lambda d: d["batches"] == 2]["point_id"].iloc[0]
    value = findings.ratio(H200, pid, pid, "tokens_per_s")
    assert value.startswith("1.00 [")


def test_every_table_names_its_points():
    pts = _points()
    table = findings.all_points(H200, {})
    assert all(f"`{p}`" in table for p in pts["point_id"])
    assert len(table.splitlines()) == len(pts) + 2
    assert findings.TABLES["results-axis"](H200, {"axis": ["batch"]}).count("\n") >= 2
