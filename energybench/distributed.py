"""Process layout of a point (ranks, nodes, rendezvous) from the environment, and torch.distributed set-up."""

from __future__ import annotations

import io
import os
import socket
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterator, Mapping

import torch
import torch.distributed as dist
from fairscale.nn.model_parallel import initialize as fs_init

from energybench.nodes import node_name


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in a point's job."""

    rank: int  # global rank
    world_size: int  # processes in the point (= shards)
    local_rank: int  # rank among the processes of this node
    local_world_size: int  # processes on this node
    node_rank: int  # index of this node in the job
    num_nodes: int
    master_addr: str  # rendezvous host (the job's first node)
    master_port: int
    hostname: str  # this node's name, as the sampler partitions its files
    slurm_job_id: str | None = None
    nodelist: tuple[str, ...] = ()

    @property
    def is_node_leader(self) -> bool:
        """Local rank 0: the one process per node that meters, samples and caps power."""
        return self.local_rank == 0

    @classmethod
    def single(cls, environ: Mapping[str, str] | None = None) -> DistEnv:
        """This process alone (on a Slurm node, named as Slurm names it, as every per-node file is keyed)."""
        host = node_name(environ)
        return cls(0, 1, 0, 1, 0, 1, "127.0.0.1", 0, host, nodelist=(host,))

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> DistEnv:
        """Read torchrun-style variables (RANK, WORLD_SIZE, LOCAL_RANK, ...), else Slurm's (SLURM_PROCID,
        SLURM_NTASKS, SLURM_JOB_NODELIST, ...), else a single process."""
        env = os.environ if environ is None else environ
        host = node_name(env)
        job_id = env.get("SLURM_JOB_ID")
        if "RANK" in env and "WORLD_SIZE" in env:
            local_world = int(env.get("LOCAL_WORLD_SIZE", env["WORLD_SIZE"]))
            return cls(
                rank=int(env["RANK"]),
                world_size=int(env["WORLD_SIZE"]),
                local_rank=int(env.get("LOCAL_RANK", env["RANK"])),
                local_world_size=local_world,
                node_rank=int(env.get("GROUP_RANK", int(env["RANK"]) // local_world)),
                num_nodes=int(env.get("NUM_NODES", -(-int(env["WORLD_SIZE"]) // local_world))),
                master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
                master_port=int(env.get("MASTER_PORT", "29500")),
                hostname=host,
                slurm_job_id=job_id,
                nodelist=tuple(env.get("ENERGYBENCH_NODELIST", host).split(",")),  # torchrun names no nodes
            )
        if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
            return _from_slurm(env, host)
        return cls.single(env)


def _from_slurm(env: Mapping[str, str], host: str) -> DistEnv:
    from submitit.slurm.slurm import _parse_node_list

    nodes = tuple(_parse_node_list(env.get("SLURM_JOB_NODELIST", host)))
    world = int(env["SLURM_NTASKS"])
    num_nodes = int(env.get("SLURM_JOB_NUM_NODES", env.get("SLURM_NNODES", "1")))
    raw_id = env.get("SLURM_JOB_ID", "0")
    array_id, task_id = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    job_id = f"{array_id}_{task_id}" if array_id and task_id else raw_id  # as squeue and sacct show it
    return DistEnv(
        rank=int(env["SLURM_PROCID"]),
        world_size=world,
        local_rank=int(env.get("SLURM_LOCALID", "0")),
        local_world_size=int(env.get("SLURM_NTASKS_PER_NODE", str(-(-world // num_nodes))).split("(")[0]),
        node_rank=int(env.get("SLURM_NODEID", "0")),
        num_nodes=num_nodes,
        master_addr=nodes[0],
        master_port=20000 + int(raw_id) % 20000,  # unique per job, array elements included
        hostname=host,
        slurm_job_id=job_id,
        nodelist=nodes,
    )


def free_port() -> int:
    """A TCP port free on this machine right now (for local rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def model_parallel(env: DistEnv, device: torch.device, timeout_s: float = 600.0) -> Iterator[None]:
    """torch.distributed over all ranks of the point (NCCL on GPUs, gloo on CPU) and fairscale's
    model-parallel group spanning them; torn down on exit."""
    backend = "nccl" if device.type == "cuda" else "gloo"
    if env.world_size == 1:
        store: dist.Store = dist.HashStore()
    else:
        store = dist.TCPStore(env.master_addr, env.master_port, env.world_size, env.rank == 0,
                              timeout=timedelta(seconds=timeout_s))
    kwargs = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(backend, store=store, rank=env.rank, world_size=env.world_size,
                            timeout=timedelta(seconds=timeout_s), **kwargs)
    try:
        with redirect_stdout(io.StringIO()):  # fairscale prints its group sizes on rank 0
            fs_init.initialize_model_parallel(env.world_size)
        yield
    finally:
        fs_init.destroy_model_parallel()
        dist.destroy_process_group()


def gather(env: DistEnv, obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank (a collective: all ranks call it)."""
    if env.world_size == 1:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


class RankError(RuntimeError):
    """A step failed on some rank; every rank raises this so none waits on the others."""


def agree(env: DistEnv, error: str | None) -> None:
    """Collective: raise RankError on every rank if any rank passes an error message (the first one wins)."""
    errors = [e for e in gather(env, error) if e]
    if errors:
        raise RankError(errors[0])
