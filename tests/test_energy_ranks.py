"""Two real ranks (gloo) on one node: the node leader meters the job's GPUs, each GPU counted once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fake_pynvml import FAKE_GPUS
from energybench.distributed import free_port

REPO = Path(__file__).resolve().parents[1]
A, B, C = (g["uuid"] for g in FAKE_GPUS)
DEMAND_W = {g["uuid"]: g["demand_w"] for g in FAKE_GPUS}

RANK_SCRIPT = """
import json, os, sys, time, torch
from energybench.distributed import DistEnv, model_parallel
from energybench.energy.counters import NodeCounters
from energybench.device.gpus import job_gpus
from energybench.energy.meter import Meter

env, cpu = DistEnv.from_environ(), torch.device("cpu")
out = {}
with model_parallel(env, cpu):
    for visible in sys.argv[1:]:  # one job after another in the same two processes
        os.environ["CUDA_VISIBLE_DEVICES"] = visible
        with job_gpus("nvml", None, env, cpu) as node:
            meter = Meter(env, cpu, NodeCounters(env.hostname, node.gpus, None))
            meter.begin("w")
            time.sleep(1.0)
            reading = meter.end("w")
            out[visible] = {"opened": [g.uuid for g in node.gpus], "energy_j": reading and reading.energy_j,
                            "duration_s": reading and reading.duration_s}
print(json.dumps(out))
"""
CASES = {"0,2": [A, C], "1": [B]}  # CUDA_VISIBLE_DEVICES=1: both ranks compute on GPU 1


def run_two_ranks(tmp_path: Path, visible: list[str]) -> list[dict]:
    import fake_pynvml

    spec = fake_pynvml.write_spec(tmp_path / "spec.json", FAKE_GPUS)
    port = free_port()
    procs = []
    for rank in range(2):
        env = fake_pynvml.child_env(spec, **{
               "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
        procs.append(subprocess.Popen([sys.executable, "-c", RANK_SCRIPT, *visible], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]


def test_two_ranks_count_each_gpu_once(tmp_path: Path) -> None:
    rank0, rank1 = run_two_ranks(tmp_path, list(CASES))
    for visible, gpus in CASES.items():
        job0, job1 = rank0[visible], rank1[visible]
        assert job0["opened"] == gpus, visible  # the node leader opens the node's GPUs of the job, each once
        assert job1["opened"] == [] and job1["energy_j"] is None  # the other rank reads nothing
        assert sorted(job0["energy_j"]) == gpus
        for uuid in gpus:  # one GPU's energy, not twice it
            assert job0["energy_j"][uuid] == pytest.approx(DEMAND_W[uuid] * job0["duration_s"], rel=0.05)
