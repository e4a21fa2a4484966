"""The 4- and 8-process sharding path through the sweep command, on CPU with gloo (issue 19's CPU part):
the shapes 65B runs at on 4 and 8 GPUs, on a model small enough for CPU ranks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import energybench.results as results

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_four_and_eight_shards_run_both_engines(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "energybench.sweep", "experiment=quickstart", "shards=4,8",
                           "engine=reference,fast", "samples=4", "max_tokens=6", "batch=2", f"out_dir={out}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "4 done, 0 failed, 0 skipped" in proc.stdout
    points = results.load(out)
    assert sorted(zip(points["shards"], points["engine"])) == [(4, "fast"), (4, "reference"), (8, "fast"),
                                                               (8, "reference")]
    assert (points["tokens"] == 4 * 6).all()  # every rank generated every token of every response
