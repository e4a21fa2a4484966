"""A point as a Slurm job: its shape (nodes, tasks, GPUs) from its shards and cluster preset, the
submitit parameters that ask for it, and what Slurm says about a job that ended without a result.

    python -m energybench.slurm point-dir <overrides>...

prints the directory of the point the overrides define (the sbatch template slurm/energybench.sbatch uses
it for the power-limit state file) after checking that the job has one task per shard and that the
model and KV cache fit the preset's GPUs;

    python -m energybench.slurm job-env

prints the environment lines a job sets before srun (energybench.jobenv). What squeue and sacct say of a job:
energybench.util.slurm_queue.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, Mapping

from energybench.config import ClusterConfig, ConfigError, PointConfig
from energybench.jobenv import shell_exports

JOB_NAME = "energybench"

# Lines the sbatch script runs before srun (energybench.jobenv: threads and NCCL, as for local runs).
JOB_SETUP = shell_exports()


@dataclass(frozen=True)
class JobShape:
    nodes: int  # ceil(shards / gpus_per_node)
    tasks_per_node: int  # min(shards, gpus_per_node): one task (rank) per GPU

    @property
    def tasks(self) -> int:
        return self.nodes * self.tasks_per_node


def job_shape(shards: int, gpus_per_node: int) -> JobShape:
    """Nodes and tasks per node for `shards` model-parallel ranks, one GPU each."""
    assert shards > 0 and gpus_per_node > 0, (shards, gpus_per_node)
    return JobShape(-(-shards // gpus_per_node), min(shards, gpus_per_node))


def shape_problem(cfg: PointConfig) -> str | None:
    """Why `cfg` cannot be laid out as a Slurm job of whole nodes, or None."""
    gpn = cfg.cluster.gpus_per_node
    if gpn is None:
        return (f"cluster={cfg.cluster.name} has no cluster.gpus_per_node; set it to the GPUs of one node "
                "(e.g. cluster.gpus_per_node=4)")
    if cfg.shards > gpn and cfg.shards % gpn:
        fits = [s for s in cfg.model.valid_shards() if s <= gpn or s % gpn == 0]
        return (f"shards={cfg.shards} cannot fill whole nodes of cluster.gpus_per_node={gpn} "
                f"(ranks per node must be equal); use shards in {', '.join(map(str, fits))}")
    return None


def executor_parameters(cfg: PointConfig) -> dict[str, Any]:
    """submitit AutoExecutor parameters (cluster="slurm") of the job that runs point `cfg`."""
    c: ClusterConfig = cfg.cluster
    assert c.gpus_per_node is not None, "shape_problem() refuses this point before it is launched"
    shape = job_shape(cfg.shards, c.gpus_per_node)
    params: dict[str, Any] = {
        "name": JOB_NAME,
        "nodes": shape.nodes,
        "tasks_per_node": shape.tasks_per_node,
        "timeout_min": c.time_min,
        "slurm_gpus_per_task": 1,
        # a rank that fails stops the job's other ranks at once instead of leaving them in a collective
        "slurm_srun_args": ["--kill-on-bad-exit=1"],
        # preemption puts the job back in the queue; submitit requeues it itself at the time limit
        "slurm_additional_parameters": {"requeue": True, **c.additional_parameters},
        "slurm_setup": [*JOB_SETUP, *c.setup],
    }
    optional = {"cpus_per_task": c.cpus_per_task, "mem_gb": c.mem_gb, "slurm_partition": c.partition,
                "slurm_account": c.account, "slurm_qos": c.qos, "slurm_constraint": c.constraint}
    params.update({k: v for k, v in optional.items() if v is not None})
    return params


def check_tasks(cfg: PointConfig, environ: Mapping[str, str] | None = None) -> None:
    """Inside a Slurm job, the job must have one task per shard; raises ConfigError otherwise."""
    env = os.environ if environ is None else environ
    if "SLURM_NTASKS" in env and int(env["SLURM_NTASKS"]) != cfg.shards:
        raise ConfigError(f"shards={cfg.shards} but this Slurm job has {env['SLURM_NTASKS']} tasks; submit it "
                          f"with {cfg.shards} tasks (sbatch --nodes/--ntasks-per-node) or set "
                          f"shards={env['SLURM_NTASKS']}")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["job-env"]:  # the sbatch template evaluates these lines
        print("\n".join(JOB_SETUP))
        return 0
    if not args or args[0] != "point-dir":
        print("usage: python -m energybench.slurm point-dir <overrides>... | job-env", file=sys.stderr)
        return 2
    from energybench.confload import compose
    from energybench.memory import gpu_memory_gib, memory_problem
    from energybench.results.layout import point_dir

    try:
        cfg = compose(args[1:])
        check_tasks(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    why = memory_problem(cfg, gpu_memory_gib(cfg.cluster))
    if why is not None:
        print(f"error: {why}", file=sys.stderr)
        return 2
    print(point_dir(cfg).resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
