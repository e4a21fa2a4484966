"""`python -m energybench.sweep experiment=quickstart shards=2` on a CPU: two gloo ranks per point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import energybench.results as results

REPO = Path(__file__).resolve().parents[1]


def test_quickstart_with_two_shards_runs_both_engines(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "energybench.sweep", "experiment=quickstart", "shards=2",
                           "engine=reference,fast", "samples=8", "max_tokens=8", "batch=4", f"out_dir={out}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 done, 0 failed, 0 skipped" in proc.stdout
    points = results.load(out)
    assert sorted(points["engine"]) == ["fast", "reference"]
    assert (points["shards"] == 2).all()
    assert (points["tokens"] == 8 * 8).all()  # random weights, sampled length: every response runs to max_tokens
