"""Which GPUs the job uses on each node: every rank names its own, the node leader maps them to NVML by UUID."""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Mapping

import torch

from energybench.distributed import DistEnv, agree, gather
from energybench.device.nvml import Gpu, GpuInfo, Nvml, NvmlFault, NvmlUnavailable, canonical_uuid

log = logging.getLogger("energybench.energy")


class GpuNotFound(ValueError):
    """A rank's GPU cannot be matched to one NVML sees on its node."""


@dataclass(frozen=True)
class Claim:
    """The GPU one rank computes on, as that rank knows it."""

    node_rank: int
    rank: int
    uuid: str | None = None  # the rank's CUDA device UUID (from torch), when it runs on a GPU
    visible: str | None = None  # its CUDA_VISIBLE_DEVICES entry (index or UUID): CPU runs, and a fallback


def visible_devices(environ: Mapping[str, str] | None = None) -> list[str] | None:
    """CUDA_VISIBLE_DEVICES as a list of entries; None when it is unset (every GPU is visible)."""
    value = (os.environ if environ is None else environ).get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    entries = [e.strip() for e in value.split(",") if e.strip()]
    return entries if entries and entries[0] != "-1" else []


def rank_claim(env: DistEnv, device: torch.device, environ: Mapping[str, str] | None = None) -> Claim | None:
    """This rank's GPU: the CUDA device's UUID (GPU ranks), and the CUDA_VISIBLE_DEVICES entry it uses, picked as
    point.pick_device picks devices (entry local_rank, or the only one). None: no GPU."""
    uuid = str(torch.cuda.get_device_properties(device).uuid) if device.type == "cuda" else None
    index = device.index if device.type == "cuda" and device.index is not None else env.local_rank
    entries = visible_devices(environ)
    if entries is None:
        return Claim(env.node_rank, env.rank, uuid, str(index))
    if len(entries) > index:
        return Claim(env.node_rank, env.rank, uuid, entries[index])
    if len(entries) == 1:
        return Claim(env.node_rank, env.rank, uuid, entries[0])
    return Claim(env.node_rank, env.rank, uuid) if uuid else None


def resolve(claim: Claim, gpus: list[GpuInfo]) -> GpuInfo:
    """The NVML GPU a claim names: by the device's UUID; else by its CUDA_VISIBLE_DEVICES entry (a UUID, a
    unique UUID prefix as CUDA accepts, or an index into NVML's order)."""
    if claim.uuid is not None:
        try:
            return _resolve_name(claim.uuid, claim.rank, gpus)
        except GpuNotFound as e:
            if claim.visible is None:
                raise
            log.warning("%s; using its CUDA_VISIBLE_DEVICES entry %r instead", e, claim.visible)
    return _resolve_name(claim.visible or "", claim.rank, gpus)


def _resolve_name(name: str, rank: int, gpus: list[GpuInfo]) -> GpuInfo:
    where = f"rank {rank}'s GPU {name!r}"
    if name.isdigit():
        index = int(name)
        if index >= len(gpus):
            raise GpuNotFound(f"{where}: CUDA_VISIBLE_DEVICES index {index}, but NVML sees {len(gpus)} GPUs here")
        return gpus[index]
    if name.lower().startswith("mig-"):
        raise GpuNotFound(f"{where}: MIG instances are not metered (NVML energy is per physical GPU); "
                          "use whole GPUs or meter.gpu=none")
    key = canonical_uuid(name)
    matches = [g for g in gpus if canonical_uuid(g.uuid).startswith(key)] if key else []
    if len(matches) != 1:
        seen = ", ".join(g.uuid for g in gpus) or "none"
        raise GpuNotFound(f"{where} matches {len(matches)} of the GPUs NVML sees on this node ({seen})")
    return matches[0]


def node_gpus(claims: list[Claim | None], node_rank: int, seen: list[GpuInfo]) -> list[GpuInfo]:
    """The distinct GPUs the ranks of node `node_rank` claim, each once, in NVML index order."""
    mine = {resolve(c, seen) for c in claims if c is not None and c.node_rank == node_rank}
    return sorted(mine, key=lambda g: g.index)


@dataclass
class NodeGpus:
    """The job's GPUs on this node, open in NVML on the node leader (empty lists elsewhere)."""

    nvml: Nvml | None = None
    gpus: list[Gpu] = field(default_factory=list)
    meter: bool = False  # GPU energy is measured (meter.gpu is not none and NVML works)
    notes: list[str] = field(default_factory=list)  # why GPU energy is not measured, when it is not


def wants_nvml(meter_gpu: str, device: torch.device, power_cap_w: float | None) -> bool:
    """NVML is opened for meter.gpu=nvml, or on GPU ranks for meter.gpu=auto or a power cap."""
    return meter_gpu == "nvml" or (device.type == "cuda" and (meter_gpu == "auto" or power_cap_w is not None))


@contextmanager
def job_gpus(meter_gpu: str, power_cap_w: float | None, env: DistEnv, device: torch.device) -> Iterator[NodeGpus]:
    """Collective: find each node's GPUs of the job and open them on its leader; NVML is shut down on exit.

    Raises (on every rank) when meter.gpu=nvml and NVML does not work, or a rank's GPU is not found.
    """
    if not wants_nvml(meter_gpu, device, power_cap_w):
        yield NodeGpus()
        return
    claims = gather(env, rank_claim(env, device))
    found, error = NodeGpus(), None
    if env.is_node_leader:
        try:
            found = _open(meter_gpu, claims, env)
        except (NvmlUnavailable, NvmlFault, GpuNotFound) as e:
            error = f"node {env.hostname}: {e}"
            if meter_gpu == "nvml" and isinstance(e, NvmlUnavailable):
                error += "; meter.gpu=nvml needs NVML (use meter.gpu=auto or none to run without GPU energy)"
    try:
        agree(env, error)  # another node failed: this one's NVML is still shut down below
        yield found
    finally:
        if found.nvml is not None:
            found.nvml.close()


def _open(meter_gpu: str, claims: list[Claim | None], env: DistEnv) -> NodeGpus:
    try:
        nvml = Nvml()
    except NvmlUnavailable as e:
        if meter_gpu == "nvml":
            raise
        log.warning("GPU energy not measured on %s: %s", env.hostname, e)
        return NodeGpus(notes=[f"{env.hostname}: NVML unavailable ({e})"])
    try:
        infos = node_gpus(claims, env.node_rank, nvml.gpus())
        gpus = [nvml.gpu(info) for info in infos]
    except BaseException:
        nvml.close()
        raise
    log.info("node %s: job GPUs %s", env.hostname, ", ".join(f"{g.index} {g.uuid}" for g in gpus) or "none")
    return NodeGpus(nvml, gpus, meter=meter_gpu != "none")
