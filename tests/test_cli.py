"""`energybench <command>` (and `python -m energybench`): one entry point over the modules' own mains."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from energybench.cli import COMMANDS, main

REPO = Path(__file__).resolve().parents[1]


def test_help_lists_every_command(capsys: pytest.CaptureFixture) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("sweep", "report", "advise", "power", "lock", "point", "slurm", "sacct"):
        assert f"\n  {name} " in out, name
    assert set(COMMANDS) == {"sweep", "report", "advise", "power", "lock", "point", "slurm", "sacct"}


def test_no_command_and_an_unknown_command_exit_2(capsys: pytest.CaptureFixture) -> None:
    assert main([]) == 2
    assert main(["sweeep"]) == 2
    assert capsys.readouterr().err.strip() == ("error: energybench sweeep: unknown command; choose one of sweep, "
                                               "point, report, advise, power, lock, slurm, sacct")


def test_a_command_runs_its_modules_main_with_the_rest_of_the_arguments(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture) -> None:
    assert main(["lock", "show", str(tmp_path)]) == 0  # energybench.lock's main
    assert capsys.readouterr().out.strip() == f"{tmp_path}: not locked"
    assert main(["slurm", "job-env"]) == 0
    assert capsys.readouterr().out.splitlines() == ['export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"',
                                                   'export NCCL_NVLS_ENABLE="${NCCL_NVLS_ENABLE:-0}"']


@pytest.mark.slow
def test_python_m_energybench_sweep_runs_a_point(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "energybench", "sweep", "experiment=quickstart", "samples=2",
                           "batch=2", "max_tokens=2", "warmup_batches=0", f"out_dir={tmp_path}"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "1 done, 0 failed, 0 skipped" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "energybench", "sweep", "model=70b"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and bad.stderr.startswith("error: model=70b: unknown model")
