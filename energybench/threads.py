"""torch's intra-op threads sized to the CPUs this process may use, shared among the ranks of its node."""

from __future__ import annotations

import os
from typing import Mapping

from energybench.distributed import DistEnv


def usable_cpus(environ: Mapping[str, str] | None = None) -> int:
    """CPUs this process may run on: its affinity mask (taskset, cgroups, Slurm's binding), at most Slurm's
    SLURM_CPUS_PER_TASK inside a Slurm task."""
    env = os.environ if environ is None else environ
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    per_task = env.get("SLURM_CPUS_PER_TASK", "")
    if per_task.isdigit() and int(per_task) > 0 and "SLURM_PROCID" in env:
        cpus = min(cpus, int(per_task))
    return max(1, cpus)


def torch_threads(env: DistEnv, environ: Mapping[str, str] | None = None) -> int:
    """Intra-op threads for one rank: $OMP_NUM_THREADS if the user set it; else the usable CPUs divided among
    the node's ranks (ranks a local launcher starts share one mask; Slurm gives each task its own CPUs)."""
    e = os.environ if environ is None else environ
    explicit = e.get("OMP_NUM_THREADS", "")
    if explicit.isdigit() and int(explicit) > 0:
        return int(explicit)
    cpus = usable_cpus(e)
    shared = "SLURM_CPUS_PER_TASK" not in e or "SLURM_PROCID" not in e
    return max(1, cpus // env.local_world_size if shared else cpus)


def size_torch_threads(env: DistEnv) -> int:
    """Set torch's intra-op thread count for this rank (threads spinning against each other and the sampler
    slowed a 2-core machine tenfold); returns it, for the point's `torch_threads` column."""
    import torch

    n = torch_threads(env)
    torch.set_num_threads(n)
    return n
