"""scripts/slurm-gpu-cluster.sh on this CPU machine: the carried .debs unpacked into a prefix, two slurmd nodes
each owning one stand-in GPU (/dev/tty0, /dev/tty1), and a shards=2 point swept across both nodes (fake NVML)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fake_pynvml import FAKE_GPUS

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "slurm-gpu-cluster.sh"
DEBS = Path(os.environ.get("ENERGYBENCH_SLURM_DEBS", REPO / ".carry" / "debs"))
CTLD_PORT = 17817


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (starts daemons, edits /etc/hosts)"
    if not list(DEBS.glob("*.deb")):
        return f"no .deb files in {DEBS} (scripts/slurm-gpu-cluster.sh download)"
    if not all(Path(f"/dev/tty{i}").exists() for i in (0, 1)):
        return "/dev/tty0 and /dev/tty1 (the stand-in GPUs) are missing"
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", CTLD_PORT)) == 0:
            return f"port {CTLD_PORT} is taken (a slurm-gpu-cluster is up already: scripts/slurm-gpu-cluster.sh down)"
    return None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """The cluster up under a fresh base directory; its PATH/SLURM_CONF; stopped (what it started) afterwards."""
    if (why := _skip_reason()) is not None:
        pytest.skip(why)
    base = tmp_path_factory.mktemp("slurm-gpu")
    env = {**os.environ, "ENERGYBENCH_SLURM_BASE": str(base), "ENERGYBENCH_SLURM_GPU_FILES": "/dev/tty0 /dev/tty1"}
    try:
        up = subprocess.run([str(SCRIPT), "up"], env=env, capture_output=True, text=True, timeout=600)
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
        yield {**env, "PATH": f"{base / 'bin'}:{os.environ['PATH']}", "SLURM_CONF": str(base / "etc" / "slurm.conf")}
    finally:
        subprocess.run([str(SCRIPT), "down"], env=env, capture_output=True, timeout=120)


def run(cmd: list[str], env: dict, **kw) -> str:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=kw.pop("timeout", 120), **kw)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def sacct_states(env: dict, job_id: str | None = None, timeout_s: float = 60) -> list[str]:
    """The jobs' states in accounting once none is still open (slurmdbd records an end a moment after it)."""
    deadline = time.monotonic() + timeout_s
    while True:
        states = run(["sacct", "-X", "-n", "-P", "-o", "State", *(["-j", job_id] if job_id else [])], env).split()
        if (states and not {"RUNNING", "PENDING", "COMPLETING"} & set(states)) or time.monotonic() > deadline:
            return states
        time.sleep(1)


def test_srun_spans_both_nodes_each_with_its_own_gpu(cluster: dict) -> None:
    assert run(["srun", "-N2", "hostname"], cluster).split() == [socket.gethostname()] * 2
    out = run(["srun", "-N2", "--ntasks-per-node=1", "--gpus-per-task=1", "sh", "-c",
               'echo "$SLURMD_NODENAME $CUDA_VISIBLE_DEVICES ${LD_LIBRARY_PATH:-none}"'], cluster)
    # node2 owns /dev/tty1: it computes on GPU 1, not on node1's GPU 0; the prefix's libraries stay out of jobs
    assert sorted(out.split("\n")[:-1]) == ["node1 0 none", "node2 1 none"]
    assert sacct_states(cluster) == ["COMPLETED", "COMPLETED"]  # accounting (slurmdbd) records both jobs


def test_a_swept_shards2_point_is_metered_on_both_nodes(cluster: dict, tmp_path: Path) -> None:
    import fake_pynvml

    spec = fake_pynvml.write_spec(tmp_path / "spec.json", FAKE_GPUS[:2])  # the host's two GPUs, seen by both nodes
    env = {**cluster, "PYTHONPATH": f"{REPO}:{REPO / 'tests'}", "OMP_NUM_THREADS": "1",
           "ENERGYBENCH_NVML_MODULE": "fake_pynvml", "FAKE_NVML_SPEC": str(spec)}
    out = tmp_path / "out"
    run([sys.executable, "-m", "energybench.sweep", "-m", "cluster=slurm", "cluster.partition=gpu",
         "cluster.gpus_per_node=1", "cluster.cpus_per_task=1", "experiment=quickstart", "samples=8", "batch=4",
         "max_tokens=8", "device=cpu", "meter.gpu=nvml", "meter.idle_s=0.3", "meter.sample_hz=20",
         "meter.flush_s=1", "shards=2", f"out_dir={out}"], env, cwd=tmp_path, timeout=600)
    (pdir,) = sorted(out.glob("*/point=*"))
    (row,) = pq.read_table(pdir / "run.parquet").to_pylist()
    gpus = pq.read_table(pdir / "gpus.parquet").to_pylist()
    assert (row["nodes"], row["hostnames"]) == (2, "node1,node2")
    assert sorted((g["node"], g["gpu_uuid"]) for g in gpus) == [("node1", FAKE_GPUS[0]["uuid"]),
                                                                ("node2", FAKE_GPUS[1]["uuid"])]
    assert row["energy_j"] == pytest.approx(sum(g["energy_j"] for g in gpus), rel=1e-9)
    demand_w = FAKE_GPUS[0]["demand_w"] + FAKE_GPUS[1]["demand_w"]
    assert row["energy_j"] == pytest.approx(demand_w * row["duration_s"], rel=0.05)
    assert sorted(p.name for p in (pdir / "samples").iterdir()) == ["node=node1", "node=node2"]
    assert sacct_states(env, row["slurm_job_id"]) == ["COMPLETED"]
