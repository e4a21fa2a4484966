"""README.md of a GPU session's folder (scripts/slurm_gpu_session.py), generated from what the session wrote.

    python3 scripts/slurm_gpu_report.py docs/benchmarks/slurm-gpus

Reads host.txt, session.log, checks.json, sacct.txt, srun.txt, kill/actions.txt and every point's run.parquet
and gpus.parquet under the folder; writes README.md beside them (the command of each sweep, the points with
their Slurm job ids, each check and its outcome, the sacct lines). Nothing in it is typed by hand.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from energybench.util.files import write_text  # noqa: E402
from energybench.util.tables import markdown  # noqa: E402

POINT_COLUMNS = ("folder", "model", "shards", "seed", "status", "attempt", "slurm_job_id", "hostnames", "gpus",
                 "tokens_per_s", "energy_j", "gpus_energy_j", "energy_per_token_j", "git_commit")


def read(folder: Path, name: str) -> str:
    path = folder / name
    return path.read_text() if path.exists() else ""


def point_rows(folder: Path) -> list[dict]:
    import pyarrow.parquet as pq

    rows = []
    for run in sorted(folder.glob("*/results/*/point=*/run.parquet")):
        r = pq.read_table(run).to_pylist()[0]
        gpus = pq.read_table(run.parent / "gpus.parquet").to_pylist()
        rows.append({**{k: r.get(k) for k in POINT_COLUMNS}, "folder": run.parents[3].name,
                     "gpus_energy_j": sum(g["energy_j"] for g in gpus), "git_commit": (r["git_commit"] or "")[:10]})
    return rows


def facts(folder: Path) -> list[str]:
    host = read(folder, "host.txt")
    os_name = re.search(r'PRETTY_NAME="([^"]+)"', host)
    gpus = re.findall(r"GPU \d+: (.+?) \(UUID: (\S+)\)", host)
    minors = re.findall(r"information:GPU UUID:\s+(\S+)\n.*?Device Minor:\s+(\d+)", host)
    lines = [f"- Host: {os_name.group(1) if os_name else 'unknown'}; GPUs (nvidia-smi -L): "
             + ", ".join(f"{n} {u}" for n, u in gpus)]
    if minors:
        lines.append("- Device files: " + ", ".join(f"/dev/nvidia{m} = {u}" for u, m in minors))
    return lines


def with_python(logged: str) -> str:
    """A logged command ('VAR=x ... -m module args') as a shell line: the variables, then python3."""
    words = logged.split()
    n = next((i for i, w in enumerate(words) if not re.fullmatch(r"[A-Z_]+=\S*", w)), len(words))
    return " ".join([*words[:n], "python3", *words[n:]])


def where(folder: Path) -> str:
    gpus = re.findall(r"GPU \d+: (.+?) \(UUID", read(folder, "host.txt"))
    return f"a host with {len(gpus)} {gpus[0]}" if gpus else "a host without NVIDIA GPUs (stand-in device files: a rehearsal)"


def main(argv: list[str] | None = None) -> int:
    folder = Path((argv if argv is not None else sys.argv[1:])[0]).resolve()
    record = json.loads(read(folder, "checks.json") or "{}")
    checks = record.get("checks", [])
    log = read(folder, "session.log")
    up = "cluster up" in log
    commands = [line.split("$ ", 1)[1] for line in log.splitlines() if "] $ " in line]
    rows = point_rows(folder)
    passed = sum(c["ok"] for c in checks)
    lines = ["# The Slurm path on real GPUs (issue 18)", "",
             "Written by `scripts/slurm_gpu_report.py` from this folder, which `scripts/slurm_gpu_session.py` wrote",
             f"on {where(folder)} (docs/slurm.md says how to run it).", "", *facts(folder),
             f"- Slurm: {'two slurmd nodes (node1, node2) came up, one GPU each as GRES' if up else 'did not come up (slurm-logs/)'}",
             f"- Checks: {passed} of {len(checks)} passed", f"- Code: commit {record.get('git_commit')}"
             f"{' (with uncommitted changes)' if record.get('git_dirty') else ''}; {record.get('date', '')}",
             "- Software: " + ", ".join(f"{k.removesuffix('_version')} {record[k]}" for k in
                                        ("python_version", "torch_version", "cuda_version", "driver_version",
                                         "nccl_version") if record.get(k)), "",
             "## Commands", "", f"    {record.get('command', '')}", "", "Which ran:", "",
             *[f"    {with_python(c)}" for c in commands], "", "## Points", "",
             markdown(rows, POINT_COLUMNS) if rows else "(none)", "", "## Checks", "",
             markdown([{"check": c["check"], "outcome": "pass" if c["ok"] else "FAIL",
                        "expected": json.dumps(c["expected"], default=str), "seen": json.dumps(c["seen"], default=str)}
                       for c in checks], ("check", "outcome", "expected", "seen")) if checks else "(none)"]
    srun = read(folder, "srun.txt").strip()
    if srun:
        lines += ["", "## srun -N2 --gpus-per-task=1 (node, CUDA_VISIBLE_DEVICES, nvidia-smi's UUID of it)", "",
                  *[f"    {ln}" for ln in srun.splitlines()]]
    actions = read(folder, "kill/actions.txt").strip()
    if actions:
        lines += ["", "## scancel and requeue mid-point", "", *[f"    {ln}" for ln in actions.splitlines()]]
    sacct = read(folder, "sacct.txt").strip()
    if sacct:
        lines += ["", "## sacct", "", *[f"    {ln}" for ln in sacct.splitlines()]]
    write_text("\n".join(lines) + "\n", folder / "README.md")
    print(folder / "README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
