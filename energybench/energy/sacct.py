"""Slurm's own energy figure for a point's job (sacct ConsumedEnergyRaw), stored beside ours in run.parquet.

It covers the whole job (load, idle, warm-up, every node, whatever the site's energy plugin counts),
so it is a cross-check of scale, not of our generation window. Read it after the job ends:

    python -m energybench.energy.sacct <out_dir or sweep dir>...
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from energybench.results.load import point_dirs
from energybench.results.schema import RUN, table
from energybench.util.files import write_parquet

TIMEOUT_S = 60.0


def consumed_energy_j(job_id: str) -> tuple[float | None, str | None]:
    """(joules, None) from `sacct -X -j <job> -o JobID,ConsumedEnergyRaw`; (None, why) when unavailable."""
    if shutil.which("sacct") is None:
        return None, "sacct not found (not a Slurm machine)"
    argv = ["sacct", "-X", "-n", "-P", "-j", job_id, "--format=JobID,ConsumedEnergyRaw"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None, f"sacct did not answer in {TIMEOUT_S:g} s"
    if proc.returncode != 0:
        said = (proc.stderr or proc.stdout).strip().splitlines()
        return None, f"sacct failed: {said[-1] if said else f'exit code {proc.returncode}'}"
    for line in proc.stdout.splitlines():
        jid, _, raw = line.partition("|")
        if jid.strip() == job_id:
            raw = raw.strip()
            if raw in ("", "0"):
                return None, f"sacct reports no energy for job {job_id} (no AcctGatherEnergyType plugin at this site?)"
            try:
                return float(raw), None
            except ValueError:
                return None, f"sacct gave ConsumedEnergyRaw={raw!r} for job {job_id}"
    return None, f"job {job_id} not (yet) in Slurm accounting; run python -m energybench.energy.sacct later"


def record(point_dir: Path) -> bool:
    """Fill sacct_energy_j and sacct_note of a finished point's run.parquet (rewritten whole); False if the
    point has no run.parquet or no Slurm job id."""
    path = point_dir / "run.parquet"
    if not path.is_file():
        return False
    row = pq.read_table(path).to_pylist()[0]
    if not row.get("slurm_job_id"):
        return False
    row["sacct_energy_j"], row["sacct_note"] = consumed_energy_j(str(row["slurm_job_id"]))
    write_parquet(table([{k: v for k, v in row.items() if k in RUN.names}], RUN), path)
    return True


def main(argv: list[str] | None = None) -> int:
    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        print("usage: python -m energybench.energy.sacct <out_dir or sweep dir>...", file=sys.stderr)
        return 2
    try:
        dirs = point_dirs(*paths)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    done = sum(record(d) for d in dirs)
    print(f"sacct energy recorded for {done} point(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
