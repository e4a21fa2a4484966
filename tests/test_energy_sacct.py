"""Slurm's ConsumedEnergyRaw stored beside our energy; null with the reason when the site has none."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from energybench.energy.sacct import consumed_energy_j, record
from energybench.results.schema import RUN, table
from energybench.results.store import write_parquet


def fake_sacct(bin_dir: Path, output: str, code: int = 0) -> None:
    """A `sacct` on PATH that logs its arguments and prints `output`."""
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "sacct"
    script.write_text(f"#!/bin/sh\necho \"$@\" >> {bin_dir / 'args.log'}\nprintf '{output}'\nexit {code}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def bin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    return tmp_path / "bin"


@pytest.mark.parametrize(("output", "code", "energy_j", "note"), [
    ("4242|123456\\n", 0, 123456.0, None),
    ("4242|\\n", 0, None, "sacct reports no energy for job 4242"),
    ("4242|0\\n", 0, None, "sacct reports no energy for job 4242"),
    ("", 0, None, "job 4242 not (yet) in Slurm accounting"),
    ("sacct: error: Slurm accounting storage is disabled\\n", 1, None,
     "sacct failed: sacct: error: Slurm accounting storage is disabled"),
])
def test_sacct_answers(bin_dir: Path, output: str, code: int, energy_j, note) -> None:
    fake_sacct(bin_dir, output, code)
    value, why = consumed_energy_j("4242")
    assert value == energy_j
    assert (why is None) if note is None else why.startswith(note)
    assert "-X -n -P -j 4242 --format=JobID,ConsumedEnergyRaw" in (bin_dir / "args.log").read_text()


def test_record_fills_run_parquet(bin_dir: Path, tmp_path: Path) -> None:
    fake_sacct(bin_dir, "77|9000\\n")
    point = tmp_path / "point=p"
    write_parquet(table([{"point_id": "p", "status": "done", "energy_j": 1.0, "slurm_job_id": "77"}], RUN),
                  point / "run.parquet")
    assert record(point)
    row = pq.read_table(point / "run.parquet").to_pylist()[0]
    assert (row["sacct_energy_j"], row["sacct_note"], row["energy_j"]) == (9000.0, None, 1.0)


def test_no_sacct_is_a_note(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert consumed_energy_j("1") == (None, "sacct not found (not a Slurm machine)")
