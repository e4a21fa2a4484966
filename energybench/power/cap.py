"""Apply a point's power cap on this node's GPUs of the job, read it back, and always restore what was found."""

from __future__ import annotations

import logging
import os
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from energybench.util.process import pid_alive
from energybench.config import PowerConfig
from energybench.distributed import DistEnv, agree
from energybench.device.limits import GpuLimit
from energybench.device.nvml import Gpu, GpuInfo, Nvml, NvmlFault
from energybench.power.backends import Backend, LimitError, make_backend
from energybench.power.state import PowerState, SavedLimit, read_state, state_path, write_state

log = logging.getLogger("energybench.power")
TOLERANCE_W = 0.5  # limits are set in mW; a read-back within this is the requested value


@dataclass
class PowerLimits:
    """This node's limits (node leader; empty elsewhere), notes for run.parquet, and the state file if any."""

    gpus: dict[str, GpuLimit] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    state: PowerState | None = None
    state_file: Path | None = None


@contextmanager
def power_limits(cfg: PowerConfig, cap_w: float | None, env: DistEnv, gpus: list[Gpu],
                 state_dir: Path) -> Iterator[PowerLimits]:
    """Collective: the node leader applies `cap_w` to `gpus` and verifies it; every rank raises if any node
    failed (nothing left changed there). On exit, normal or not, the found limits are restored; a restore
    that fails raises (unless another exception is on its way) and keeps the state file for
    `python -m energybench.power restore`."""
    limits, error = PowerLimits(), None
    if env.is_node_leader:
        try:
            limits = apply(cfg, cap_w, gpus, state_path(state_dir, env.hostname), env.hostname)
        except (LimitError, NvmlFault, OSError) as e:  # OSError: no state file, so nothing was changed
            error = f"node {env.hostname}: {e}"
    try:
        agree(env, error)
        yield limits
    except BaseException:
        _restore_logged(limits, gpus)
        raise
    failures = _restore_logged(limits, gpus)
    if failures:
        raise LimitError(failures)


def apply(cfg: PowerConfig, cap_w: float | None, gpus: list[Gpu], path: Path, host: str) -> PowerLimits:
    """Undo a killed earlier point's limits (its state file at `path`), check the cap against every GPU's range,
    write the state file, set, read back."""
    if gpus and path.exists():
        _restore_stale(path, gpus)
    if cap_w is None:
        return _as_found(gpus)
    if not gpus:
        return _no_gpus(cfg, cap_w, host)
    for g in gpus:
        lo, hi = g.constraints_w()
        if not lo - TOLERANCE_W <= cap_w <= hi + TOLERANCE_W:
            raise LimitError(f"power_cap={cap_w:g} W is outside the range {g.label} {g.name} allows, "
                             f"{lo:g}-{hi:g} W; choose a cap in that range")
    found = {g.uuid: g.limit_w() for g in gpus}
    backend = make_backend(cfg.backend, cfg.command)
    limits = PowerLimits()
    if backend is not None:
        saved = [SavedLimit(g.uuid, g.index, found[g.uuid]) for g in gpus]
        limits.state = PowerState.new(host, backend.name, cfg.command, saved)
        limits.state_file = path
        write_state(limits.state, path)  # before the first change: a SIGKILL from here on can be undone
    try:
        if backend is not None:
            for g in gpus:
                backend.set_limit_w(g, cap_w)
                log.info("%s: power limit %g W -> %g W", g.label, found[g.uuid], cap_w)
        for g in gpus:
            limits.gpus[g.uuid] = GpuLimit(g.uuid, g.index, cap_w, found[g.uuid], g.enforced_limit_w())
        _check_enforced(cfg, cap_w, limits, backend)
    except BaseException as e:  # nothing stays changed: put back what was found, then fail
        _raise_with(e, _restore_logged(limits, gpus))
    return limits


def _restore_stale(path: Path, gpus: list[Gpu]) -> None:
    """A state file left by a point that could not restore (SIGKILL, OOM kill, node reboot: an earlier attempt of
    this point, requeued onto this node) holds the limits found before it capped them. Put those back first:
    otherwise this point would take the capped limits for the ones it found, overwrite the file, and "restore"
    the cap at its end, losing the original limits for good."""
    try:
        state = read_state(path)
    except ValueError as e:
        raise LimitError(f"{e}; remove it if no GPU of this node is still capped by it") from None
    if state.pid != os.getpid() and pid_alive(state.pid):
        raise LimitError(f"{path} belongs to process {state.pid}, still running on this node: two points must not "
                         "share a power.state_dir on one node (leave power.state_dir=null: one per point)")
    with _signals_deferred():
        failures = restore_saved(state, gpus[0].nvml, {g.uuid: g for g in gpus})
    if failures:
        raise LimitError(f"power limits left by a killed earlier point ({path}) could not be restored: "
                         f"{'; '.join(failures)}; restore them with: python -m energybench.power restore {path}")
    path.unlink(missing_ok=True)
    log.warning("restored the power limits a killed earlier point left (%s)", path)


def _as_found(gpus: list[Gpu]) -> PowerLimits:
    """power_cap=null: record the limits as found; a GPU that cannot report them leaves a note."""
    limits = PowerLimits()
    for g in gpus:
        try:
            limits.gpus[g.uuid] = GpuLimit(g.uuid, g.index, None, g.limit_w(), g.enforced_limit_w())
        except NvmlFault as e:
            limits.notes.append(f"power limit not recorded: {e}")
    return limits


def _raise_with(error: BaseException, restore_failure: str | None) -> None:
    """Re-raise `error`, naming a failed restore in the message when there was one."""
    if restore_failure and isinstance(error, (LimitError, NvmlFault)):
        raise LimitError(f"{error}; {restore_failure}") from None
    raise error


def _no_gpus(cfg: PowerConfig, cap_w: float, host: str) -> PowerLimits:
    msg = f"power_cap={cap_w:g} W: no GPU of the job is open in NVML on {host}, so no limit can be set or read"
    if cfg.backend == "none" and cfg.policy == "observe":
        return PowerLimits(notes=[msg + " (recorded only: power.backend=none power.policy=observe)"])
    raise LimitError(msg + "; run on GPUs with NVML, or use power_cap=null")


def _check_enforced(cfg: PowerConfig, cap_w: float, limits: PowerLimits, backend: Backend | None) -> None:
    """A read-back that differs from the cap: a note under power.policy=observe, else LimitError."""
    off = [lim for lim in limits.gpus.values() if abs(lim.enforced_limit_w - cap_w) > TOLERANCE_W]
    if not off:
        return
    what = ", ".join(f"GPU {lim.index} ({lim.uuid}) enforces {lim.enforced_limit_w:g} W" for lim in off)
    how = "power.backend=none changes nothing" if backend is None else f"it was set through power.backend={cfg.backend}"
    msg = f"power_cap={cap_w:g} W requested but {what}; {how}"
    if cfg.policy == "observe":
        limits.notes.append(msg + " (power.policy=observe: ran anyway)")
        log.warning("%s (power.policy=observe: running anyway)", msg)
        return
    fix = ("set the limit beforehand, use power.backend=nvml or command, or power.policy=observe to record and run"
           if backend is None else "check the site's power policy, or use power.policy=observe to record and run")
    raise LimitError(f"{msg}; {fix}")


def restore_saved(state: PowerState, nvml: Nvml, opened: dict[str, Gpu]) -> list[str]:
    """Put back the limits a state file recorded, with its own backend, opening by UUID the GPUs not in
    `opened`; returns what failed (empty: all restored and verified)."""
    backend = make_backend(state.backend, state.command)
    if backend is None:
        return [f"its backend {state.backend!r} changes no limits"]
    gpus = dict(opened)
    try:
        for saved in state.gpus:
            if saved.uuid not in gpus:
                gpus[saved.uuid] = nvml.gpu(GpuInfo(saved.uuid, saved.index, ""))
    except NvmlFault as e:
        return [str(e)]
    return restore(state, gpus, backend)


def restore(state: PowerState, gpus: dict[str, Gpu], backend: Backend) -> list[str]:
    """Put back every limit of `state`; returns what failed (empty: all restored and verified)."""
    failures = []
    for saved in state.gpus:
        gpu = gpus.get(saved.uuid)
        if gpu is None:
            failures.append(f"GPU {saved.index} ({saved.uuid}) is not open on this node")
            continue
        try:
            if abs(gpu.limit_w() - saved.limit_w) > TOLERANCE_W:
                backend.set_limit_w(gpu, saved.limit_w)
            now_w = gpu.limit_w()
            if abs(now_w - saved.limit_w) > TOLERANCE_W:
                failures.append(f"{gpu.label} reads {now_w:g} W after restoring {saved.limit_w:g} W")
            else:
                log.info("%s: power limit restored to %g W", gpu.label, saved.limit_w)
        except (LimitError, NvmlFault) as e:
            failures.append(str(e))
    return failures


def _restore_logged(limits: PowerLimits, gpus: list[Gpu]) -> str | None:
    """Restore `limits.state` with SIGTERM/SIGINT held back; log and return a message if it failed."""
    state, path = limits.state, limits.state_file
    if state is None or path is None:
        return None
    backend = make_backend(state.backend, state.command)
    assert backend is not None
    with _signals_deferred():
        failures = restore(state, {g.uuid: g for g in gpus}, backend)
    if not failures:
        path.unlink(missing_ok=True)
        limits.state = None
        return None
    msg = (f"power limits NOT restored on {state.host}: {'; '.join(failures)}; "
           f"restore them with: python -m energybench.power restore {path}")
    log.error("%s", msg)
    return msg


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGTERM/SIGINT while limits are restored; a signal that came meanwhile is re-delivered after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    sigs = (signal.SIGTERM, signal.SIGINT)
    previous = {s: signal.signal(s, lambda signum, frame: caught.append(signum)) for s in sigs}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        for s in caught[:1]:
            signal.raise_signal(s)
