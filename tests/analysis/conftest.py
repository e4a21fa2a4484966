"""One real tiny CPU sweep per session (4 done points, 1 failed, 1 killed mid-run), and a copy with energy.

The sweep runs through `python -m energybench.sweep` like a user's; the failed point fails for real (a
checkpoint directory that does not exist). The killed point is made by hand from a done one (its run.parquet
removed, status left `running` by a process that is gone, one measured batch kept), as a SIGKILLed job leaves
it: loaders show it `interrupted`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from energybench.config import PointConfig, from_mapping, to_mapping
from energybench.results.layout import point_id
from energybench.results.store import write_status

from .energy_fixture import fill

REPO = Path(__file__).resolve().parents[2]
TINY = ("experiment=quickstart", "samples=4", "model.max_seq_len=16")


def run_sweep(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "energybench.sweep", "-m", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)


def make_killed_point(done_dir: Path) -> Path:
    """A copy of a done point under another seed, as a job killed after its first measured batch leaves it."""
    cfg = from_mapping(PointConfig, yaml.safe_load((done_dir / "config.yaml").read_text()))
    cfg = from_mapping(PointConfig, {**to_mapping(cfg), "seed": 2})
    target = done_dir.parent / f"point={point_id(cfg)}"
    target.mkdir()
    (target / "config.yaml").write_text(yaml.safe_dump(to_mapping(cfg), sort_keys=False))
    batches = pq.read_table(done_dir / "batches.parquet").slice(0, 2)  # warm-up + one measured batch
    ids = pa.array([point_id(cfg)] * batches.num_rows)
    pq.write_table(batches.set_column(batches.schema.get_field_index("point_id"), "point_id", ids),
                   target / "batches.parquet")
    write_status(target, "running", host="vm")
    status = json.loads((target / "status.json").read_text())
    status["owner"] = {**status["owner"], "pid": dead_pid(), "pid_start": -1}  # as a SIGKILLed job leaves it
    (target / "status.json").write_text(json.dumps(status))
    return target


def dead_pid() -> int:
    """The pid of a process that has exited (a point owner killed by SIGKILL, the OOM killer or a full disk)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.fixture(scope="session")
def cpu_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """<out>/quickstart: 4 done points (batch 1,2 x max_tokens 2,4), 1 failed, 1 killed mid-run (interrupted)."""
    out = tmp_path_factory.mktemp("sweep")
    proc = run_sweep(*TINY, "batch=1,2", "max_tokens=2,4", f"out_dir={out}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    proc = run_sweep(*TINY, "batch=1", "max_tokens=2", f"out_dir={out}", "model.weights=meta",
                     "model.path=/nonexistent/llama")
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-3000:]
    sweep = out / "quickstart"
    first = sorted(sweep.glob("point=*-b2-t4-*"))[0]
    make_killed_point(first)
    return sweep


@pytest.fixture(scope="session")
def energy_sweep(cpu_sweep: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same sweep with the fixture's energy data in every done point (see energy_fixture)."""
    sweep = tmp_path_factory.mktemp("energy") / "quickstart"
    shutil.copytree(cpu_sweep, sweep)
    for d in sorted(sweep.glob("point=*")):
        if (d / "run.parquet").is_file():
            fill(d)
    return sweep
