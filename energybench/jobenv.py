"""The environment every rank of a point starts with: OpenMP/BLAS threads and NCCL settings, in one place.

The local launcher (energybench.dispatch.local) sets it for the processes it starts; the Slurm
launcher and the sbatch template export it in the job script (`shell_exports`, also printed by
`python -m energybench.slurm job-env`). A value already in the environment is kept: the user's choice stands.
"""

from __future__ import annotations

import os
from typing import Mapping

from energybench.threads import usable_cpus

# NCCL's NVLink multicast (NVLS) off unless the user turns it on (NCCL_NVLS_ENABLE=1): the lent
# machines the results in docs/results were measured on ask for it off.
NCCL_DEFAULTS: dict[str, str] = {"NCCL_NVLS_ENABLE": "0"}


def rank_environ(shards: int, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """OMP_NUM_THREADS and NCCL_* for one of `shards` ranks sharing this machine's CPUs (a local run):
    the usable CPUs divided among the ranks, unless already set."""
    env = os.environ if environ is None else environ
    out = {"OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", str(max(1, usable_cpus(env) // shards)))}
    out.update({key: env.get(key, default) for key, default in NCCL_DEFAULTS.items()})
    return out


def shell_exports() -> tuple[str, ...]:
    """The same settings as bash lines for a Slurm job: one thread per CPU Slurm gave the task (each task
    has its own CPUs, so OMP_NUM_THREADS is set from Slurm's count even if the submitting shell had one)."""
    lines = ['export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"']
    lines += [f'export {key}="${{{key}:-{default}}}"' for key, default in NCCL_DEFAULTS.items()]
    return tuple(lines)
