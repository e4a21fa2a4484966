"""fairscale model parallelism over real gloo process groups: 1, 2 and 4 ranks compute the same thing (the
reference, fast and fast_tuned engines give the same greedy tokens)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

import mp_worker
from energybench.distributed import DistEnv, free_port
from energybench.model.build import build_model, shard_dims
from energybench.model.checkpoint import write_meta_checkpoint
from tiny import CPU, TINY, one_process

REPO = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().parent / "mp_worker.py"


def start_ranks(world: int, out: Path, checkpoint: Path) -> list[subprocess.Popen]:
    port = free_port()
    procs = []
    for rank in range(world):
        env = {**os.environ, "PYTHONPATH": str(REPO), "RANK": str(rank), "WORLD_SIZE": str(world),
               "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, str(WORKER), str(out), str(checkpoint)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return procs


def test_sharded_model_checkpoint_and_engines_match_unsharded(tmp_path: Path) -> None:
    # a Meta-format checkpoint written as by 2 model-parallel ranks, from the seed-5 random weights
    with one_process():
        model = build_model(TINY, CPU, torch.float32, seed=5)
        state = {n: p.detach().clone() for n, p in model.named_parameters()}
        write_meta_checkpoint(state, shard_dims(model), 2, tmp_path / "meta",
                              {"dim": TINY.dim, "n_layers": TINY.n_layers, "n_heads": TINY.n_heads,
                               "multiple_of": TINY.multiple_of, "norm_eps": TINY.norm_eps, "vocab_size": -1})
    assert sorted(p.name for p in (tmp_path / "meta").glob("*.pth")) == ["consolidated.00.pth", "consolidated.01.pth"]
    procs = [p for world in (2, 4) for p in start_ranks(world, tmp_path, tmp_path / "meta")]
    mp_worker.main(tmp_path, tmp_path / "meta", DistEnv.single())  # world 1, in this process meanwhile
    for p in procs:
        log, _ = p.communicate(timeout=300)
        assert p.returncode == 0, log[-3000:]
    runs = {w: torch.load(tmp_path / f"world{w}.pt") for w in (1, 2, 4)}
    one = runs[1]
    for w in (1, 2, 4):
        assert (runs[w]["random"] - one["random"]).abs().max().item() <= 1e-5, w  # sharded == unsharded
        assert (runs[w]["meta"] - one["random"]).abs().max().item() <= 1e-5, w  # 2 files -> 1, 2, 4 shards
        assert runs[w]["outputs"]["fast"] == runs[w]["outputs"]["reference"], w  # same greedy tokens
        assert runs[w]["outputs"]["fast_tuned"] == runs[w]["outputs"]["reference"], w
        assert runs[w]["tuned_gemv"] == (os.environ.get("TRITON_INTERPRET") == "1"), w  # the kernel ran, ranks too
        assert runs[w]["outputs"]["reference"] == one["outputs"]["reference"], w
    assert [len(o) for o in one["outputs"]["reference"]] == [6, 3, 9, 1]
