"""The online sweep on CPU as a user runs it (subprocess, fake NVML): two rates, then the report's online
figures drawn from their requests, steps and samples."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import energybench.results as results
from energybench.analysis.online import live_timeline, load_curves
from energybench.results.online import requests, steps

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def online_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import fake_pynvml

    tmp = tmp_path_factory.mktemp("online")
    spec = fake_pynvml.write_spec(tmp / "spec.json", fake_pynvml.FAKE_GPUS, state_file=str(tmp / "limits.json"))
    env = fake_pynvml.child_env(spec, CUDA_VISIBLE_DEVICES="1")
    proc = subprocess.run(
        [sys.executable, "-m", "energybench.sweep", "-m", "experiment=quickstart", "engine=fast", "workload=online",
         "online.rate=10,80", "online.requests=60", "batch=4", "max_tokens=8", "meter.gpu=nvml",
         "meter.sample_hz=20", f"out_dir={tmp / 'out'}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 done, 0 failed" in proc.stdout
    return tmp / "out" / "quickstart"


def test_each_rate_is_a_point_with_its_requests_steps_and_metrics(online_sweep: Path) -> None:
    points = results.points(online_sweep).set_index("rate_rps")
    assert sorted(points.index) == [10.0, 80.0]
    assert (points["workload"] == "online").all() and (points["requests"] == 60).all()
    assert points.loc[80.0, "mean_live"] > points.loc[10.0, "mean_live"]  # more load, fuller batch
    assert points.loc[80.0, "latency_p99_s"] > points.loc[10.0, "latency_p99_s"]  # and queueing
    reqs = requests(online_sweep)
    assert len(reqs) == 120 and set(reqs["point_id"].astype(str)) == set(points["point_id"])
    for pid, rows in reqs.groupby("point_id", observed=True):
        point = points[points["point_id"] == pid].iloc[0]
        assert rows["window_energy_j"].sum() == pytest.approx(point["energy_j"], rel=1e-9)


def test_the_report_draws_the_online_figures(online_sweep: Path, tmp_path: Path) -> None:
    points = results.points(online_sweep)
    fig = load_curves(points)
    assert not fig.empty
    lines = fig.axes[0].get_lines()
    assert len(lines) == 1 and list(lines[0].get_xdata()) == [10.0, 80.0]  # one model/engine/cap, two rates
    ids = sorted(points["point_id"])
    timeline = live_timeline(steps(online_sweep), results.gpu_samples(online_sweep), ids)
    assert not timeline.empty and not timeline.notes  # power found for both points
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "energybench.report", str(online_sweep), "--out", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    md = (out / "report.md").read_text()
    assert "## Online serving (workload=online)" in md
    assert (out / "figures" / "online_load.png").is_file() and (out / "figures" / "online_timeline.png").is_file()


def test_a_two_shard_online_point_admits_the_same_requests_on_both_ranks(tmp_path: Path) -> None:
    # rank 0's arrival count is broadcast at every scheduler edge; ranks that disagreed would deadlock or
    # fail in a collective of mismatched shapes
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "energybench.sweep", "-m", "experiment=quickstart", "engine=fast", "workload=online",
         "online.rate=20", "online.requests=30", "shards=2", "batch=4", "max_tokens=8", f"out_dir={tmp_path}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    point = results.points(tmp_path).iloc[0]
    assert point["status"] == "done" and point["shards"] == 2 and point["requests"] == 30
    assert len(requests(tmp_path)) == 30
