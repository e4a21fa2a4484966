"""Former home of the job's GPUs, now energybench.device.gpus; these names stay importable from here."""

from energybench.device.gpus import (  # noqa: F401
    Claim, GpuNotFound, NodeGpus, job_gpus, node_gpus, rank_claim, resolve, visible_devices, wants_nvml,
)
