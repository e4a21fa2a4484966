"""The config tree and plugin ship with the package: a regular (non-editable) install runs a sweep."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_regular_install_finds_config_tree_and_sweeper(tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(REPO)],
                   check=True, capture_output=True, timeout=600)
    assert (target / "energybench" / "conf" / "config.yaml").is_file()
    assert (target / "energybench" / "conf" / "model" / "7b.yaml").is_file()
    assert (target / "hydra_plugins" / "energybench_plugins" / "sweeper.py").is_file()
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = subprocess.run([sys.executable, "-c", "import energybench.confload as c; print(c.conf_dir())"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True, timeout=120)
    assert Path(where.stdout.strip()) == target / "energybench" / "conf"
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "energybench.sweep", "experiment=quickstart", "samples=2", "batch=2",
         "max_tokens=2", "warmup_batches=0", f"out_dir={out}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "1 done, 0 failed, 0 skipped" in proc.stdout
