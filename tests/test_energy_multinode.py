"""A shards=2 point over two simulated nodes (two processes, gloo, different node names, each its own fake NVML):
per-node sample files, the point's energy summed over both nodes, each node's GPU UUIDs, a shared GPU counted once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import energybench.results as results
from energybench.distributed import free_port
from energybench.results.samples import read_samples

REPO = Path(__file__).resolve().parents[1]
NODES = ("node-a", "node-b")


def gpu(uuid: str, demand_w: float) -> dict:
    return {"uuid": uuid, "demand_w": demand_w}


# Each node's NVML sees two GPUs; the rank on the node computes on CUDA_VISIBLE_DEVICES's entry.
A0, A1 = gpu("GPU-a0a0a0a0-1111-2222-3333-a0a0a0a0a0a0", 110.0), gpu("GPU-a1a1a1a1-1111-2222-3333-a1a1a1a1a1a1", 170.0)
B0, B1 = gpu("GPU-b0b0b0b0-1111-2222-3333-b0b0b0b0b0b0", 230.0), gpu("GPU-b1b1b1b1-1111-2222-3333-b1b1b1b1b1b1", 290.0)


def run_two_nodes(tmp_path: Path, seen: dict[str, list[dict]], visible: dict[str, str]) -> Path:
    """`python -m energybench.point` as rank 0 on node-a and rank 1 on node-b (one rank, its node's leader, each),
    as torchrun started on two hosts would: GROUP_RANK/NUM_NODES, ENERGYBENCH_NODELIST, the node's own name
    (SLURMD_NODENAME, as a slurmd names its node) and the node's own GPUs (a fake NVML spec per node)."""
    import fake_pynvml

    out, port, procs = tmp_path / "out", free_port(), []
    for rank, node in enumerate(NODES):
        spec = fake_pynvml.write_spec(tmp_path / f"nvml-{node}.json", seen[node])
        env = fake_pynvml.child_env(spec, CUDA_VISIBLE_DEVICES=visible[node], **{
               "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
               "GROUP_RANK": str(rank), "NUM_NODES": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "SLURMD_NODENAME": node, "ENERGYBENCH_NODELIST": ",".join(NODES)})
        for key in ("SLURM_JOB_ID", "SLURM_PROCID", "SLURM_NTASKS"):
            env.pop(key, None)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "energybench.point", "experiment=quickstart", "samples=8", "batch=4",
             "max_tokens=8", "shards=2", "device=cpu", "meter.gpu=nvml", "meter.idle_s=0.3", "meter.sample_hz=20",
             "meter.flush_s=1", f"out_dir={out}"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = [p.communicate(timeout=300)[0] for p in procs]
    for node, p, log in zip(NODES, procs, logs):
        assert p.returncode == 0, f"{node}:\n{log[-3000:]}"
    (pdir,) = results.point_dirs(out)
    return pdir


def point_tables(pdir: Path) -> tuple[dict, list[dict]]:
    (run,) = pq.read_table(pdir / "run.parquet").to_pylist()
    return run, pq.read_table(pdir / "gpus.parquet").to_pylist()


@pytest.mark.slow
def test_each_node_meters_its_own_gpus_and_the_point_sums_them(tmp_path: Path) -> None:
    seen = {"node-a": [A0, A1], "node-b": [B0, B1]}
    pdir = run_two_nodes(tmp_path, seen, {"node-a": "1", "node-b": "0"})  # node-a computes on A1, node-b on B0
    run, gpus = point_tables(pdir)
    assert (run["nodes"], run["hostnames"]) == (2, "node-a,node-b")
    # each node's GPU, under that node, by the UUID that node's NVML gave it
    assert sorted((g["node"], g["gpu_uuid"], g["gpu_index"]) for g in gpus) == [
        ("node-a", A1["uuid"], 1), ("node-b", B0["uuid"], 0)]
    assert run["idle_power_w"] == pytest.approx(A1["demand_w"] + B0["demand_w"], rel=0.05)
    by_uuid = {g["gpu_uuid"]: g for g in gpus}
    for want in (A1, B0):  # each GPU's own draw over the generation window
        assert by_uuid[want["uuid"]]["energy_j"] == pytest.approx(want["demand_w"] * run["duration_s"], rel=0.05)
    # the point's energy: both nodes' GPUs, and the same as the per-GPU table
    assert run["energy_j"] == pytest.approx(sum(g["energy_j"] for g in gpus), rel=1e-9)
    assert run["energy_j"] == pytest.approx((A1["demand_w"] + B0["demand_w"]) * run["duration_s"], rel=0.05)
    assert run["prefill_energy_j"] + run["decode_energy_j"] == pytest.approx(run["energy_j"], rel=0.03)
    # each node streamed its own samples, of its own GPU only
    assert sorted(p.name for p in (pdir / "samples").iterdir()) == ["node=node-a", "node=node-b"]
    for node, want in (("node-a", A1), ("node-b", B0)):
        parts = sorted((pdir / "samples" / f"node={node}").glob("part-*.parquet"))
        assert parts, node
        uuids = {u for part in parts for u in pq.read_table(part, columns=["gpu_uuid"]).column(0).to_pylist()}
        assert uuids == {want["uuid"]}, node
    samples = read_samples(pdir).to_pandas()
    assert dict(samples.groupby("node")["gpu_uuid"].unique().map(list)) == {
        "node-a": [A1["uuid"]], "node-b": [B0["uuid"]]}


@pytest.mark.slow
def test_a_gpu_both_nodes_report_is_counted_once(tmp_path: Path) -> None:
    # two simulated nodes on one host, both handed the same device: both NVMLs report the same UUID
    seen = {"node-a": [A0, A1], "node-b": [A0, A1]}
    pdir = run_two_nodes(tmp_path, seen, {"node-a": "0", "node-b": "0"})
    run, gpus = point_tables(pdir)
    assert run["energy_j"] == pytest.approx(A0["demand_w"] * run["duration_s"], rel=0.05)  # once, not twice
    assert [g["gpu_uuid"] for g in gpus] == [A0["uuid"]]  # one row for the one GPU
    assert run["energy_j"] == pytest.approx(sum(g["energy_j"] for g in gpus), rel=1e-9)
    assert run["idle_power_w"] == pytest.approx(A0["demand_w"], rel=0.05)  # the idle baseline counts it once too
    assert f"GPU {A0['uuid']} is reported by nodes node-a and node-b: counted once" in run["energy_notes"]
