"""`python -m energybench.report`: Markdown + HTML + PNGs, on a sweep with a failed and a killed point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import energybench.results as results
from energybench.report import main

from .conftest import REPO


def test_report_of_a_partial_cpu_sweep_lists_failures_and_skips_energy_figures(cpu_sweep: Path,
                                                                               tmp_path: Path) -> None:
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "energybench.report", str(cpu_sweep), "--out", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    md = (out / "report.md").read_text()
    points = results.points(cpu_sweep)
    failed = points[points["status"] == "failed"].iloc[0]
    killed = points[points["status"] == "running"].iloc[0]
    assert failed["point_id"] in md and "/nonexistent/llama" in md
    assert killed["point_id"] in md and "6 points: 4 done, 1 failed, 1 running." in md
    assert "batch: 1, 2; max_tokens: 2, 4" in md  # what the sweep varied
    assert "![Inference throughput (paper Fig. 2)](figures/fig2_tokens_per_s.png)" in md
    assert md.count("Not drawn: no energy measured") == 7
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["fig2_tokens_per_s.png"]
    html = (out / "report.html").read_text()
    assert "<img src='figures/fig2_tokens_per_s.png'" in html and failed["point_id"] in html
    assert not list(tmp_path.glob(".report*"))  # no temporary left beside it


def test_report_with_energy_draws_every_figure_and_replaces_an_old_report(energy_sweep: Path) -> None:
    assert main([str(energy_sweep)]) == 0
    out = energy_sweep / "report"
    (out / "stale.txt").write_text("from an earlier report")
    assert main([str(energy_sweep), "--no-html"]) == 0
    assert not (out / "stale.txt").exists() and not (out / "report.html").exists()
    md = (out / "report.md").read_text()
    figures = sorted(p.stem for p in (out / "figures").iterdir())
    assert {"power_timeline", "utilization_timeline", "pareto", "roofline"} <= set(figures) and len(figures) == 11
    for stem in figures:
        assert f"(figures/{stem}.png)" in md
    assert "Not drawn: power_cap was not varied" in md
    assert "| H100 SXM5 80GB |" in md  # efficiency table and the known cards
    assert len(results.points(energy_sweep)) == 6  # the report directory is not mistaken for points


def test_report_of_two_sweeps(cpu_sweep: Path, energy_sweep: Path, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main([str(cpu_sweep), str(energy_sweep)]) == 0
    assert "12 points: 8 done, 2 failed, 2 running." in (tmp_path / "energybench-report" / "report.md").read_text()


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(make: str, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "sweep"
    if make == "empty":
        target.mkdir()
    out = tmp_path / "out"
    assert main([str(target), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(target) in err[0]
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == (["sweep"] if make == "empty" else [])


def test_the_report_timeline_of_a_requeued_point_draws_its_last_attempt(energy_sweep: Path, tmp_path: Path) -> None:
    import shutil

    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from energybench.analysis import power_timeline
    from energybench.analysis.report import TIMELINE_COLUMNS

    point = next(p for p in sorted(energy_sweep.glob("point=*")) if (p / "samples").is_dir())
    copy = tmp_path / point.parent.name / point.name
    shutil.copytree(point, copy)
    for part in list(copy.glob("samples/node=*/part-*.parquet")):  # a second attempt, 100 s later
        t = pq.read_table(part)
        later = pc.add(t["timestamp"], pa_duration_s(100))
        t = t.set_column(t.schema.get_field_index("attempt"), "attempt", pc.add(t["attempt"], 1))
        t = t.set_column(t.schema.get_field_index("timestamp"), "timestamp", later)
        pq.write_table(t, part.with_name(f"part-retry-{part.name.removeprefix('part-')}"))
    samples = results.gpu_samples(copy, columns=TIMELINE_COLUMNS)  # what the report reads
    fig = power_timeline(samples)
    assert any("the last is drawn" in note for note in fig.notes), fig.notes


def pa_duration_s(seconds: int):
    import pyarrow as pa

    return pa.scalar(seconds * 1_000_000, type=pa.duration("us"))


def test_report_recommends_prices_and_compares_sacct(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from .synthetic_points import Spec, write_sweep

    sweep = write_sweep([Spec(16, 1, 0.6, 0.020, 500), Spec(64, 1, 0.35, 0.025, 1000),
                         Spec(128, 1, 0.25, 0.030, 1400), Spec(256, 1, status="failed", reason="out of memory")],
                        tmp_path)
    jobs = {"b16": (5000.0, None), "b64": (None, "sacct reports no energy for job 12")}
    for d in sweep.glob("point=*"):
        key = d.name.split("-")[2]
        if key in jobs and (d / "run.parquet").is_file():
            t = pq.read_table(d / "run.parquet")
            row = {**t.to_pylist()[0], "slurm_job_id": f"job-{key}", "sacct_energy_j": jobs[key][0],
                   "sacct_note": jobs[key][1]}
            pq.write_table(t.from_pylist([row], t.schema), d / "run.parquet")
    out = tmp_path / "report"
    assert main([str(sweep), "--out", str(out), "--no-html", "--carbon-g-per-kwh", "400", "--pue", "1.5"]) == 0
    md = (out / "report.md").read_text()
    assert "batch 128 at shards 1 uses 29 % less energy per token than the paper's default" in md
    assert "carbon_intensity_g_per_kwh = 400 gCO2e/kWh; PUE = 1.5" in md and "co2_per_token_g" in md
    b16 = results.points(sweep).set_index("batch").loc[16]
    ratio = 5000.0 / b16["energy_j"]
    assert f"| job-b16 | 5000 | {b16['energy_j']:.4g} | GPU | {ratio:.4g} |" in md
    assert "not reported by this cluster's acct_gather_energy plugin (sacct reports no energy for job 12)" in md
    assert "whole job" in md  # the gap explained
    assert main([str(sweep), "--out", str(tmp_path / "r2"), "--pue", "0.5"]) == 2
    assert not (tmp_path / "r2").exists()
