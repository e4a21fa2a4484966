"""Loaders of energybench.results on a real tiny sweep: points (done, failed, killed), batches, samples, gpus."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import energybench.results as results
from energybench.results.schema import SAMPLES_FILE

from .conftest import REPO
from .energy_fixture import HZ, IDLE_S, fill


def test_points_load_done_failed_and_killed_points_with_their_status(cpu_sweep: Path) -> None:
    points = results.points(cpu_sweep)
    assert sorted(points["status"]) == ["done"] * 4 + ["failed", "interrupted"]
    failed = points[points["status"] == "failed"].iloc[0]
    assert "/nonexistent/llama" in failed["reason"]
    assert failed["batch"] == 1 and failed["max_tokens"] == 2  # its configuration loads although it failed
    killed = points[points["status"] == "interrupted"].iloc[0]
    assert killed["batches_done"] == 1 and killed["batches_expected"] == 2 and killed["seed"] == 2
    done = points[points["status"] == "done"]
    assert sorted(zip(done["batch"], done["max_tokens"])) == [(1, 2), (1, 4), (2, 2), (2, 4)]
    assert done["energy_j"].isna().all() and done["power_w"].isna().all()  # no meter on a CPU: null, never 0
    assert (done["batches_done"] == done["batches"]).all()
    assert points["batch"].dtype == "int64"
    assert (done["model_layers"] == 4).all() and (done["model_dim"] == 256).all()
    # derived metrics are defined for what was measured and null for what was not
    assert (done["context_tokens"] == (done["prompt_tokens"] + done["tokens"]) / done["responses"]).all()
    assert done["roofline_tokens_per_s"].isna().all()  # "cpu" is no known card


def test_points_of_several_sweeps_and_duplicate_paths(cpu_sweep: Path, energy_sweep: Path) -> None:
    points = results.points(cpu_sweep, energy_sweep, cpu_sweep / "..")
    assert len(points) == 12  # the out_dir of cpu_sweep names the same points again: each counted once
    assert points.groupby("sweep_dir").size().tolist() == [6, 6]
    assert points["point_id"].nunique() == 6


def test_points_error_and_empty(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such results directory"):
        results.points(tmp_path / "missing")
    empty = results.points(tmp_path)
    assert empty.empty and {"point_id", "status", "energy_per_token_j"} <= set(empty.columns)


def test_batches_join_point_axes_and_keep_partial_points(cpu_sweep: Path) -> None:
    batches = results.batches(cpu_sweep)
    assert set(batches["status"]) == {"done", "interrupted"}  # the failed point wrote no batch
    assert batches.groupby("point_id")["warmup"].sum().eq(1).all()
    for pid, rows in batches.groupby("point_id"):
        assert (rows["batch"] == int(pid.split("-b")[1].split("-")[0])).all()
    measured = results.batches(cpu_sweep, measured_only=True)
    assert not measured["warmup"].any()
    assert measured.groupby("status").size().to_dict() == {"done": 4 + 4 + 2 + 2, "interrupted": 1}


def test_gpu_samples_filters_and_elapsed_time(energy_sweep: Path) -> None:
    every = results.gpu_samples(energy_sweep)
    files = sorted(energy_sweep.glob("point=*/samples/node=*/part-*.parquet"))
    assert len(files) == 4 and len(every) == sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    assert every["node"].astype(str).eq("node0").all()
    assert every.groupby("point_id", observed=True)["elapsed_s"].min().eq(0).all()
    assert isinstance(every["window"].dtype, pd.CategoricalDtype)
    one = every["point_id"].astype(str).iloc[0]
    assert set(results.gpu_samples(energy_sweep, points=[one])["point_id"].astype(str)) == {one}
    idle = results.gpu_samples(energy_sweep, windows=["idle"], columns=["power_w", "window"])
    assert set(idle["window"].astype(str)) == {"idle"}
    assert len(idle) == (every["window"] == "idle").sum() == pytest.approx(4 * IDLE_S * HZ, abs=4)
    assert set(idle.columns) >= {"power_w", "node", "elapsed_s"} and "temperature_c" not in idle
    assert results.gpu_samples(energy_sweep, nodes=["elsewhere"]).empty


def test_multi_node_samples_take_node_from_the_directory(cpu_sweep: Path, tmp_path: Path) -> None:
    src = next(d for d in sorted(cpu_sweep.glob("point=*")) if (d / "run.parquet").is_file())
    point = tmp_path / "quickstart" / src.name
    shutil.copytree(src, point)
    run = fill(point, nodes=2, gpus_per_node=2)
    samples = results.gpu_samples(tmp_path / "quickstart")
    assert "node" not in pq.read_schema(next(point.glob("samples/node=*/part-*.parquet"))).names
    assert samples.groupby("node", observed=True)["gpu_uuid"].nunique().to_dict() == {"node0": 2, "node1": 2}
    gpus = results.gpus(tmp_path / "quickstart")
    assert len(gpus) == 4 and gpus["energy_j"].sum() == pytest.approx(run["energy_j"], rel=1e-6)


def test_samples_written_by_a_newer_writer_with_extra_columns_load_together(tmp_path: Path) -> None:
    base = pa.Table.from_pylist([{"point_id": "p", "timestamp": pd.Timestamp("2026-01-01", tz="UTC"),
                                  "gpu_uuid": "GPU-1", "power_w": 100.0, "window": "idle"}],
                                schema=pa.schema([SAMPLES_FILE.field(n) for n in
                                                  ("point_id", "timestamp", "gpu_uuid", "power_w", "window")]))
    d = tmp_path / "s" / "point=p" / "samples" / "node=h"
    d.mkdir(parents=True)
    pq.write_table(base, d / "part-00000.parquet")
    pq.write_table(base.append_column("fan_pct", pa.array([40.0])), d / "part-00001.parquet")
    samples = results.gpu_samples(tmp_path / "s")
    assert len(samples) == 2 and samples["fan_pct"].isna().sum() == 1


def test_importing_analysis_does_not_import_torch() -> None:
    code = ("import sys, energybench.results, energybench.analysis, energybench.analysis.report, "
            "energybench.report; bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_requeued_partial_point_counts_the_batches_of_its_current_attempt(cpu_sweep: Path, tmp_path: Path) -> None:
    from energybench.results.store import write_status

    killed = next(d for d in cpu_sweep.glob("point=*") if not (d / "run.parquet").exists()
                  and (d / "batches.parquet").exists())
    point = tmp_path / "requeued" / killed.name
    shutil.copytree(killed, point)
    one = pq.read_table(killed / "batches.parquet").to_pylist()  # warm-up + 1 measured batch, attempt 1
    rows = [*one, {**one[1], "batch_index": 1}] + [{**r, "attempt": 2} for r in one]  # attempt 1: 2, attempt 2: 1
    pq.write_table(pa.Table.from_pylist(rows, pq.read_schema(killed / "batches.parquet")), point / "batches.parquet")
    write_status(point, "running")  # the requeued job started attempt 2
    assert results.points(point)["batches_done"].tolist() == [1]
    assert results.batches(point)["attempt"].tolist() == [2, 2]  # the current attempt (warm-up + 1) by default
    assert results.batches(point, all_attempts=True)["attempt"].tolist() == [1, 1, 1, 2, 2]


def test_batches_of_a_renamed_sweep_directory_keep_their_point_axes(cpu_sweep: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copied-from-the-cluster"
    shutil.copytree(cpu_sweep, copy)
    batches = results.batches(copy)
    assert set(batches["sweep"]) == {"copied-from-the-cluster"}
    assert batches["model"].notna().all() and set(batches["status"]) == {"done", "interrupted"}
