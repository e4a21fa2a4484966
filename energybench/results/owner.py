"""Who runs a point or holds a sweep (host, pid, process start, Slurm job), and whether that owner is still alive."""

from __future__ import annotations

import functools
import os
import socket
import time
from typing import Any, Mapping

from energybench.util.process import pid_alive
from energybench.util.slurm_queue import QueueUnknown, end_state, queue_entry


def host() -> str:
    """The machine's own name (not Slurm's node name: simulated nodes share a host and its pids)."""
    return socket.gethostname()


def boot_id() -> str | None:
    """This boot of the kernel: a pid recorded before a reboot names no process after it."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


def process_start(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot, /proc/<pid>/stat field 22); None where unknown.
    A pid reused by a later process has a later start: the pair (pid, start) names one process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2:].split()[19])  # fields after "(comm)": state is field 3


def this_process(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The owner record of this process: host, pid, pid_start, boot_id, slurm_job_id."""
    env = os.environ if environ is None else environ
    array_id, task_id = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    job = f"{array_id}_{task_id}" if array_id and task_id else env.get("SLURM_JOB_ID")
    pid = os.getpid()
    return {"host": host(), "pid": pid, "pid_start": process_start(pid), "boot_id": boot_id(), "slurm_job_id": job}


def _cached(ttl_s: float):
    """Remember a Slurm query's answer for `ttl_s` (a sweep of many points asks about the same job once; a
    notebook that reloads later gets a fresh answer)."""

    def wrap(query):
        answers: dict[str, tuple[float, Any]] = {}

        @functools.wraps(query)
        def cached(job_id: str):
            now = time.monotonic()
            if job_id not in answers or now - answers[job_id][0] > ttl_s:
                answers[job_id] = (now, query(job_id))
            return answers[job_id][1]

        return cached

    return wrap


@_cached(ttl_s=10.0)
def slurm_job_alive(job_id: str) -> bool | None:
    """True while squeue lists job `job_id` as not ended; False once it no longer does (sacct then has its end
    state); None where no Slurm client answers on this machine."""
    try:
        return queue_entry(job_id) is not None
    except QueueUnknown:
        return None  # the controller did not answer (or there is none): say nothing


@_cached(ttl_s=10.0)
def slurm_end_state(job_id: str) -> str | None:
    """The state sacct records for an ended job (COMPLETED, CANCELLED, NODE_FAIL, OUT_OF_MEMORY, TIMEOUT, ...),
    or None where accounting does not answer."""
    state = end_state(job_id)
    return None if state == "UNKNOWN" else state


def alive(owner: Mapping[str, Any] | None) -> bool | None:
    """Whether the process an owner record names still runs: True, False, or None where this machine
    cannot tell (another host and no Slurm job to ask about, or a record written without an owner).

    A Slurm job is asked about first (squeue); else, on this host, the pid must exist with the same start
    time (a reused pid is a different process) in the same boot."""
    if not owner:
        return None
    job = owner.get("slurm_job_id")
    if job:
        state = slurm_job_alive(str(job))
        if state is not None:
            return state
    if owner.get("host") != host() or not isinstance(owner.get("pid"), int):
        return None
    if owner.get("boot_id") and boot_id() and owner["boot_id"] != boot_id():
        return False
    if not pid_alive(owner["pid"]):
        return False
    start = process_start(owner["pid"])
    return owner.get("pid_start") is None or start is None or start == owner["pid_start"]


def describe(owner: Mapping[str, Any] | None, ended: bool = False) -> str:
    """'pid 123 on host h (Slurm job 45)' for messages; with `ended`, the job's end state from sacct."""
    if not owner:
        return "an unknown process"
    text = f"pid {owner.get('pid')} on host {owner.get('host')}"
    job = owner.get("slurm_job_id")
    if not job:
        return text
    state = slurm_end_state(str(job)) if ended else None
    return text + f" (Slurm job {job}" + (f", ended {state})" if state else ")")
