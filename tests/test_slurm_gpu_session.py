"""scripts/slurm_gpu_session.py rehearsed on this CPU machine: the GPU session's cluster (the carried .debs, two
slurmd nodes, stand-in GPUs /dev/tty0 and /dev/tty1), its sweep, its checks and its scancel/requeue/re-run, with
the fake NVML. What it checks on the lent GPUs is what it checks here; a check that cannot fail would pass both."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fake_pynvml import FAKE_GPUS, write_spec
from test_slurm_gpu_cluster import _skip_reason

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]
SESSION = REPO / "scripts" / "slurm_gpu_session.py"
EXPECT = f"node1={FAKE_GPUS[0]['uuid']},node2={FAKE_GPUS[1]['uuid']}"
CPU_POINT = "dataset=synthetic device=cpu meter.gpu=nvml meter.idle_s=0.3 meter.sample_hz=20 cluster.cpus_per_task=1"


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess, list[dict]]:
    """The session once, on stand-in GPUs: (its folder's parent, its process, its checks)."""
    if (why := _skip_reason()) is not None:
        pytest.skip(why)
    tmp_path = tmp_path_factory.mktemp("session")
    proc, checks = session(tmp_path, EXPECT)
    return tmp_path, proc, checks


def session(tmp_path: Path, expect: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    spec = write_spec(tmp_path / "spec.json", FAKE_GPUS[:2])  # the host's two GPUs, seen by both nodes
    env = {**os.environ, "ENERGYBENCH_SLURM_BASE": str(tmp_path / "base"),
           "ENERGYBENCH_SLURM_GPU_FILES": "/dev/tty0 /dev/tty1", "PYTHONPATH": f"{REPO}:{REPO / 'tests'}",
           "OMP_NUM_THREADS": "1", "ENERGYBENCH_NVML_MODULE": "fake_pynvml", "FAKE_NVML_SPEC": str(spec)}
    out = tmp_path / "session"
    proc = subprocess.run([sys.executable, str(SESSION), str(out), "--models", "tiny", "--point-args",
                           "samples=8 batch=4 max_tokens=8", "--kill-args",
                           "model=tiny samples=96 batch=2 max_tokens=16 meter.flush_s=1", "--expect", expect,
                           "--deadline-s", "900", "--rehearsal", "--extra", CPU_POINT],
                          env=env, capture_output=True, text=True, timeout=1200)
    record = json.loads((out / "checks.json").read_text())
    assert record["git_commit"] and "slurm_gpu_session.py" in record["command"]  # provenance of the checks
    return proc, record["checks"]


def test_the_gpu_session_passes_every_check_on_stand_in_gpus(ran) -> None:
    tmp_path, proc, checks = ran
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    names = [c["check"] for c in checks]
    assert all(c["ok"] for c in checks), [c for c in checks if not c["ok"]]
    # the main sweep's two points (shards 1 and 2), the cancelled one, the requeued one and the re-run are all checked
    assert sum("energy_j equals the sum of gpus.parquet" in n for n in names) == 4
    assert "main sweep: every point done" in names
    assert any(n.startswith("seed=11 (scancel)") for n in names)
    assert any(n.startswith("seed=12 (requeue)") for n in names)
    assert any(n.startswith("re-run:") for n in names)
    out = tmp_path / "session"
    assert (out / "sacct.txt").read_text().count("|CANCELLED") >= 1  # scancel'd job in accounting
    assert not (tmp_path / "base" / "run" / "slurmctld.pid").exists() or \
        subprocess.run(["kill", "-0", (tmp_path / "base" / "run" / "slurmctld.pid").read_text().strip()],
                       capture_output=True).returncode != 0  # the cluster is down again


def test_a_wrong_gpu_for_a_node_fails_its_check(ran) -> None:
    """The session's point checks on the same results, told each node should see the other's GPU: they fail."""
    sys.path.insert(0, str(REPO / "scripts"))
    import slurm_gpu_session as sgs

    tmp_path, _, _ = ran
    (pdir,) = [p for p in (tmp_path / "session" / "main" / "results").glob("*/point=*")
               if "shards: 2" in (p / "config.yaml").read_text()]
    swapped = {"node1": FAKE_GPUS[1]["uuid"], "node2": FAKE_GPUS[0]["uuid"]}
    s = sgs.Session(tmp_path / "again", 60)
    (tmp_path / "again").mkdir()
    sgs.check_point(s, pdir, swapped)
    verdict = {c["check"].split(": ", 1)[-1]: c["ok"] for c in s.checks}
    assert verdict == {"energy_j equals the sum of gpus.parquet": True,
                       "one GPU per node, the one Slurm gave that node": False,
                       "samples/node=<name>/ per node, each holding only its own GPU": False,
                       "a shards=2 point spans both nodes": True}


def test_the_report_is_generated_from_the_sessions_files(ran) -> None:
    tmp_path, _, checks = ran
    folder = tmp_path / "session"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "slurm_gpu_report.py"), str(folder)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    readme = (folder / "README.md").read_text()
    assert f"- Checks: {len(checks)} of {len(checks)} passed" in readme
    assert "two slurmd nodes (node1, node2) came up" in readme
    points = [ln for ln in readme.split("## Points")[1].split("## Checks")[0].splitlines() if ln.startswith("| ")][1:]
    assert len(points) == 4  # the main sweep's 2 points and the kill test's 2 (the header row left out)
    assert all("| done |" in p for p in points)
    assert "## sacct" in readme and "CANCELLED" in readme.split("## sacct")[1]
