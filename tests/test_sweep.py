"""End to end on this machine: `python -m energybench.sweep` from the command line to Parquet."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import energybench.results as results

REPO = Path(__file__).resolve().parents[1]
RUN_COLUMNS = ["model", "dataset", "batch", "max_tokens", "shards", "power_cap_w", "samples", "responses",
               "prompt_tokens", "tokens", "duration_s", "tokens_per_s", "energy_j", "energy_per_token_j",
               "energy_per_response_j", "power_w"]


def sweep(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "energybench.sweep", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_two_point_multirun_writes_two_done_points(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = sweep("-m", "experiment=quickstart", "samples=8", "max_tokens=8", "batch=2,4", f"out_dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 done, 0 failed, 0 skipped" in proc.stdout
    points = results.load(out)
    assert sorted(points["batch"]) == [2, 4]
    assert set(points["status"]) == {"done"}
    for column in RUN_COLUMNS:
        assert column in points.columns, column
    assert (points["tokens"] == 8 * 8).all()  # sampled length: every response runs to max_tokens
    assert points["energy_j"].isna().all()  # no meter on a CPU: null, never 0
    assert (points["tokens_per_s"] > 0).all()
    # provenance: the code (this checkout's commit), the software and the user's command
    assert (points["code_source"] == "git").all() and points["git_commit"].str.len().eq(40).all()
    assert points["torch_version"].notna().all() and points["python_version"].notna().all()
    assert set(points["command"]) == {f"python -m energybench.sweep -m experiment=quickstart samples=8 max_tokens=8 "
                                      f"batch=2,4 out_dir={out}"}
    for point_dir in results.point_dirs(out):
        assert {p.name for p in point_dir.iterdir()} >= {"config.yaml", "status.json", "run.parquet",
                                                         "batches.parquet"}
        status = json.loads((point_dir / "status.json").read_text())
        assert status["git_commit"] == points["git_commit"].iloc[0]  # status.json names the code too
        batches = pq.read_table(point_dir / "batches.parquet").to_pandas()
        measured = batches[~batches["warmup"]]
        assert batches["warmup"].sum() == 1
        assert measured["tokens"].sum() == 64
        assert len(measured) == 8 // int(point_dir.name.split("-b")[1].split("-")[0])


def test_failing_point_is_recorded_and_the_sweep_goes_on(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # passes validation, fails when the point loads its checkpoint
    proc = sweep("-m", "experiment=quickstart", "samples=4", "batch=4", "max_tokens=4", f"out_dir={out}",
                 "model.weights=random,meta", "model.path=/nonexistent/llama")
    assert proc.returncode == 1
    assert "1 done, 1 failed, 0 skipped" in proc.stdout
    points = results.load(out)
    assert sorted(points["status"]) == ["done", "failed"]
    reason = points.loc[points["status"] == "failed", "reason"].item()
    assert "model.path=/nonexistent/llama: no such directory" in reason


def test_rerun_skips_done_points(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ("-m", "experiment=quickstart", "samples=4", "batch=4", "max_tokens=4", f"out_dir={out}")
    assert sweep(*args).returncode == 0
    again = sweep(*args)
    assert again.returncode == 0 and "0 done, 0 failed, 1 skipped" in again.stdout


@pytest.mark.parametrize(("override", "message"), [
    ("batch=-1", "error: batch=-1: must be > 0"),
    ("model=70b", "error: model=70b: unknown model"),
    ("batch=abc", "error: batch='abc': expected an integer"),
    ("batch=2,-3", "error: batch=-3: must be > 0"),
])
def test_bad_input_exits_nonzero_and_writes_nothing(tmp_path: Path, override: str, message: str) -> None:
    out = tmp_path / "out"
    proc = sweep("-m", "experiment=quickstart", f"out_dir={out}", override, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(message)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_ctrl_c_stops_a_local_sweep_instead_of_starting_the_next_point(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "energybench.sweep", "-m", "experiment=quickstart", "samples=64",
                             "max_tokens=64", "batch=2,4", f"out_dir={out}"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not any('"running"' in p.read_text() for p in out.glob("*/point=*/status.json")):
            assert proc.poll() is None and time.monotonic() < deadline, "no point started"
            time.sleep(0.2)
        time.sleep(0.5)  # its signal handlers are installed right after "running" is written
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-3000:]
    assert "received SIGINT; the sweep stops here" in err
    states = sorted(json.loads(p.read_text())["state"] for p in out.glob("*/point=*/status.json"))
    assert states == ["failed", "pending"]  # the second point never started; a re-run resumes it
