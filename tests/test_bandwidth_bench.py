"""benchmarks/bandwidth.py: a CPU run writes records whose bytes add up; the Triton read sums what it reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_a_cpu_run_writes_a_record_per_pass(tmp_path: Path) -> None:
    argv = [sys.executable, str(REPO / "benchmarks" / "bandwidth.py"), "--device", "cpu", "--gb", "0.064",
            "--buffers", "4", "--repeats", "2", "--out", str(tmp_path)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = json.loads((tmp_path / "bandwidth.json").read_text())
    assert [r["kind"] for r in records] == ["read", "copy"]
    read, copy = records
    assert copy["gb"] == pytest.approx(2 * read["gb"]) and read["gb"] == pytest.approx(0.064)
    for r in records:
        assert r["gb_per_s"] == pytest.approx(r["gb"] / (r["ms"] * 1e-3))
        assert r["frac_of_datasheet"] is None and r["command"].startswith("python benchmarks/bandwidth.py")
        assert r["gpu_uuids"] == [] and "git_commit" in r
    assert "| read | 0.064 | 4 |" in (tmp_path / "bandwidth.md").read_text()


def test_the_triton_read_sums_each_block() -> None:
    code = ("import sys, torch; sys.path.insert(0, 'benchmarks'); from bandwidth_kernel import triton_sum; "
            "x = torch.arange(1000, dtype=torch.float16); out = torch.zeros(8); triton_sum(x, out, 128, 4); "
            "print(out.tolist())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO,
                          env={**os.environ, "TRITON_INTERPRET": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    want = [float(sum(range(p * 128, min(1000, (p + 1) * 128)))) for p in range(8)]
    assert got == pytest.approx(want)
