"""Stand-in for the `pynvml` module (nvidia-ml-py) where no NVIDIA GPU exists: real names, units, error codes.

energybench imports it instead of pynvml when ENERGYBENCH_NVML_MODULE=fake_pynvml (tests only). Its GPUs
are scripted: in-process with `configure(...)`, or across processes by a JSON spec named in
$FAKE_NVML_SPEC (read at nvmlInit); with SHARED_SPEC set (the `fake_nvml` fixture sets it and
$FAKE_NVML_SPEC to one file), `configure` also writes the spec, so child processes (the node's
sampler) see the same GPUs. Units are NVML's: energy in mJ, power and limits in mW, memory in
bytes. Each GPU draws min(its demand, its power limit) watts, so its energy counter (cumulative mJ)
grows by that integral; a cap lowers it. With `state_file` in the spec, power limits live in that
file, so a limit set in one process (a point) is seen by another (the test, `energybench.power restore`).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_UNKNOWN = 999

NVML_TEMPERATURE_GPU = 0
NVML_CLOCK_SM = 1
NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION = 83
NVML_FI_DEV_POWER_AVERAGE = 185
NVML_FI_DEV_POWER_INSTANT = 186
NVML_VALUE_TYPE_DOUBLE = 0
NVML_VALUE_TYPE_UNSIGNED_INT = 1
NVML_VALUE_TYPE_UNSIGNED_LONG_LONG = 3
nvmlClocksEventReasonGpuIdle = 0x1
nvmlClocksEventReasonSwPowerCap = 0x4

_NAMES = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized", NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported", NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
    NVML_ERROR_NOT_FOUND: "Not Found", NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found", NVML_ERROR_GPU_IS_LOST: "GPU is lost",
    NVML_ERROR_UNKNOWN: "Unknown Error",
}


class NVMLError(Exception):
    """As pynvml's: NVMLError(code) builds the code's subclass; `.value` is the code."""

    _valClassMapping: dict[int, type] = {}

    def __new__(cls, value: int):
        if cls is NVMLError:
            cls = NVMLError._valClassMapping.get(value, cls)
        obj = Exception.__new__(cls)
        obj.value = value
        return obj

    def __init__(self, value: int) -> None:
        super().__init__(value)

    def __str__(self) -> str:
        return _NAMES.get(self.value, f"NVML Error with code {self.value}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NVMLError) and self.value == other.value

    __hash__ = Exception.__hash__


for _code, _name in [(NVML_ERROR_UNINITIALIZED, "Uninitialized"), (NVML_ERROR_INVALID_ARGUMENT, "InvalidArgument"),
                     (NVML_ERROR_NOT_SUPPORTED, "NotSupported"), (NVML_ERROR_NO_PERMISSION, "NoPermission"),
                     (NVML_ERROR_NOT_FOUND, "NotFound"), (NVML_ERROR_DRIVER_NOT_LOADED, "DriverNotLoaded"),
                     (NVML_ERROR_LIBRARY_NOT_FOUND, "LibraryNotFound"), (NVML_ERROR_GPU_IS_LOST, "GpuIsLost"),
                     (NVML_ERROR_UNKNOWN, "Unknown")]:
    _cls = type(f"NVMLError_{_name}", (NVMLError,), {})
    NVMLError._valClassMapping[_code] = _cls
    globals()[_cls.__name__] = _cls


@dataclass
class FakeGpu:
    """One scripted GPU; watts in the spec, NVML units (mW, mJ) at the API."""

    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    demand_w: float = 300.0  # what it would draw uncapped
    limit_w: float = 700.0  # power management limit found at start
    default_limit_w: float = 700.0
    min_limit_w: float = 200.0
    max_limit_w: float = 700.0
    energy_counter: bool = True  # False: a pre-Volta GPU (NOT_SUPPORTED)
    power_fields: bool = True  # NVML_FI_DEV_POWER_INSTANT/_AVERAGE answer
    mem_total_bytes: int = 80 * 2**30
    mem_used_bytes: int = 20 * 2**30
    util_pct: int = 90
    mem_util_pct: int = 40
    temperature_c: int = 45
    sm_clock_mhz: int = 1980
    energy_mj: float = 1.0e9  # counter at "boot"
    errors: dict[str, int] = field(default_factory=dict)  # API function name -> NVML error code it raises
    _t: float = field(default=0.0, repr=False)


@dataclass
class _State:
    gpus: list[FakeGpu] = field(default_factory=list)
    library_missing: bool = False
    allow_set_limit: bool = True  # False: as a non-root user (NO_PERMISSION)
    state_file: str | None = None  # limits shared between processes
    inits: int = 0
    calls: list[tuple[str, tuple]] = field(default_factory=list)
    clock: Callable[[], float] = time.monotonic


_S = _State()
SHARED_SPEC: Path | None = None  # configure() also writes its GPUs and options here, for child processes


# Three scripted H100s drawing 100, 200 and 300 W under load (the `fake_nvml` fixture's default).
FAKE_GPUS = [{"uuid": f"GPU-{c * 8}-1111-2222-3333-{c * 12}", "demand_w": 100.0 * (i + 1)}
             for i, c in enumerate("abc")]


def configure(gpus: list[dict[str, Any]], *, library_missing: bool = False, allow_set_limit: bool = True,
              state_file: str | None = None, clock: Callable[[], float] | None = None) -> None:
    """Script this process's GPUs (dicts of FakeGpu fields); resets counters, calls and the init count."""
    global _S
    _S = _State([FakeGpu(**g) for g in gpus], library_missing, allow_set_limit, state_file,
                clock=clock or time.monotonic)
    now = _S.clock()
    for g in _S.gpus:
        g._t = now
    if state_file and not Path(state_file).exists():
        _save_limits({g.uuid: g.limit_w for g in _S.gpus})
    if SHARED_SPEC is not None:
        write_spec(SHARED_SPEC, gpus, library_missing=library_missing, allow_set_limit=allow_set_limit,
                   state_file=state_file)


def write_spec(path: Path, gpus: list[dict[str, Any]], **options: Any) -> Path:
    """Write a spec file for child processes ($FAKE_NVML_SPEC); `options` as for configure (not `clock`)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps({"gpus": gpus, **options}))
    os.replace(tmp, path)
    return path


def child_env(spec: Path, **extra: str) -> dict[str, str]:
    """The environment of a child process (a sweep, a rank) whose `pynvml` is this fake, reading `spec`."""
    tests = Path(__file__).resolve().parent
    return {**os.environ, "PYTHONPATH": f"{tests.parent}:{tests}", "ENERGYBENCH_NVML_MODULE": "fake_pynvml",
            "FAKE_NVML_SPEC": str(spec), "OMP_NUM_THREADS": "1", **extra}


def _from_env() -> None:
    spec = os.environ.get("FAKE_NVML_SPEC")
    if spec and not _S.gpus:
        data = json.loads(Path(spec).read_text())
        configure(data.pop("gpus"), **data)


# --- cross-process limits ----------------------------------------------------------------------------

def _load_limits() -> dict[str, float] | None:
    if not _S.state_file or not Path(_S.state_file).exists():
        return None
    with open(_S.state_file) as f:
        fcntl.flock(f, fcntl.LOCK_SH)
        return json.load(f)


def _save_limits(limits: dict[str, float]) -> None:
    path = Path(_S.state_file)  # type: ignore[arg-type]
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(limits))
    os.replace(tmp, path)


def limits_w() -> dict[str, float]:
    """Current power limit of every scripted GPU, watts (the shared file's, when there is one)."""
    shared = _load_limits()
    return {g.uuid: (shared or {}).get(g.uuid, g.limit_w) for g in _S.gpus}


def _limit_w(g: FakeGpu) -> float:
    shared = _load_limits()
    return shared.get(g.uuid, g.limit_w) if shared else g.limit_w


# --- scripting ---------------------------------------------------------------------------------------

def _advance(g: FakeGpu) -> None:
    now = _S.clock()
    g.energy_mj += _draw_w(g) * (now - g._t) * 1e3
    g._t = now


def _draw_w(g: FakeGpu) -> float:
    return min(g.demand_w, _limit_w(g))


def set_demand(uuid: str, watts: float) -> None:
    """Change what a GPU draws from now on (its counter integrates the old demand up to now)."""
    g = _gpu_by_uuid(uuid)
    _advance(g)
    g.demand_w = watts


def reset_energy(uuid: str) -> None:
    """Driver reload: the GPU's energy counter starts again from 0."""
    g = _gpu_by_uuid(uuid)
    _advance(g)
    g.energy_mj = 0.0


def calls(name: str | None = None) -> list[tuple[str, tuple]]:
    """Every API call made in this process (name, args), or those of one function."""
    return [c for c in _S.calls if name is None or c[0] == name]


# --- the pynvml API ----------------------------------------------------------------------------------

class _Handle:
    def __init__(self, index: int) -> None:
        self.index = index


def _api(fn: Callable) -> Callable:
    def wrapper(*args: Any) -> Any:
        _S.calls.append((fn.__name__, args))
        if fn.__name__ not in ("nvmlInit", "nvmlInitWithFlags") and _S.inits == 0:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)
        if args and isinstance(args[0], _Handle) and fn.__name__ in _gpu(args[0]).errors:
            raise NVMLError(_gpu(args[0]).errors[fn.__name__])
        return fn(*args)

    wrapper.__name__ = fn.__name__
    return wrapper


def _gpu(handle: _Handle) -> FakeGpu:
    if not isinstance(handle, _Handle) or not 0 <= handle.index < len(_S.gpus):
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    return _S.gpus[handle.index]


def _gpu_by_uuid(uuid: str) -> FakeGpu:
    for g in _S.gpus:
        if g.uuid == uuid:
            return g
    raise NVMLError(NVML_ERROR_NOT_FOUND)


@_api
def nvmlInitWithFlags(flags: int) -> None:
    _from_env()
    if _S.library_missing:
        raise NVMLError(NVML_ERROR_LIBRARY_NOT_FOUND)
    _S.inits += 1


@_api
def nvmlInit() -> None:
    nvmlInitWithFlags(0)


@_api
def nvmlShutdown() -> None:
    _S.inits -= 1


@_api
def nvmlSystemGetDriverVersion() -> str:
    return "580.00.00-fake"


@_api
def nvmlDeviceGetCount() -> int:
    return len(_S.gpus)


@_api
def nvmlDeviceGetHandleByIndex(index: int) -> _Handle:
    if not 0 <= index < len(_S.gpus):
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    return _Handle(index)


@_api
def nvmlDeviceGetHandleByUUID(uuid: str | bytes) -> _Handle:
    uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
    return _Handle(_S.gpus.index(_gpu_by_uuid(uuid)))


@_api
def nvmlDeviceGetUUID(handle: _Handle) -> str:
    return _gpu(handle).uuid


@_api
def nvmlDeviceGetIndex(handle: _Handle) -> int:
    _gpu(handle)
    return handle.index


@_api
def nvmlDeviceGetName(handle: _Handle) -> str:
    return _gpu(handle).name


@_api
def nvmlDeviceGetTotalEnergyConsumption(handle: _Handle) -> int:
    g = _gpu(handle)
    if not g.energy_counter:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    _advance(g)
    return int(g.energy_mj)


@_api
def nvmlDeviceGetPowerUsage(handle: _Handle) -> int:
    return int(_draw_w(_gpu(handle)) * 1e3)


@_api
def nvmlDeviceGetFieldValues(handle: _Handle, field_ids: list[int]) -> list[SimpleNamespace]:
    g = _gpu(handle)
    out = []
    for fid in field_ids:
        ok = g.power_fields and fid in (NVML_FI_DEV_POWER_INSTANT, NVML_FI_DEV_POWER_AVERAGE)
        value = SimpleNamespace(uiVal=int(_draw_w(g) * 1e3) if ok else 0, dVal=0.0, ullVal=0)
        out.append(SimpleNamespace(fieldId=fid, scopeId=0, timestamp=int(time.time() * 1e6), latencyUsec=0,
                                   valueType=NVML_VALUE_TYPE_UNSIGNED_INT,
                                   nvmlReturn=NVML_SUCCESS if ok else NVML_ERROR_NOT_SUPPORTED, value=value))
    return out


@_api
def nvmlDeviceGetUtilizationRates(handle: _Handle) -> SimpleNamespace:
    g = _gpu(handle)
    return SimpleNamespace(gpu=g.util_pct, memory=g.mem_util_pct)


@_api
def nvmlDeviceGetMemoryInfo(handle: _Handle, version: int | None = None) -> SimpleNamespace:
    g = _gpu(handle)
    return SimpleNamespace(total=g.mem_total_bytes, used=g.mem_used_bytes, free=g.mem_total_bytes - g.mem_used_bytes)


@_api
def nvmlDeviceGetTemperature(handle: _Handle, sensor: int) -> int:
    return _gpu(handle).temperature_c


@_api
def nvmlDeviceGetClockInfo(handle: _Handle, clock_type: int) -> int:
    return _gpu(handle).sm_clock_mhz


@_api
def nvmlDeviceGetCurrentClocksEventReasons(handle: _Handle) -> int:
    g = _gpu(handle)
    return nvmlClocksEventReasonSwPowerCap if g.demand_w > _limit_w(g) else 0


@_api
def nvmlDeviceGetCurrentClocksThrottleReasons(handle: _Handle) -> int:
    return nvmlDeviceGetCurrentClocksEventReasons(handle)


@_api
def nvmlDeviceGetPowerManagementLimit(handle: _Handle) -> int:
    return int(round(_limit_w(_gpu(handle)) * 1e3))


@_api
def nvmlDeviceGetEnforcedPowerLimit(handle: _Handle) -> int:
    return int(round(_limit_w(_gpu(handle)) * 1e3))


@_api
def nvmlDeviceGetPowerManagementDefaultLimit(handle: _Handle) -> int:
    return int(round(_gpu(handle).default_limit_w * 1e3))


@_api
def nvmlDeviceGetPowerManagementLimitConstraints(handle: _Handle) -> list[int]:
    g = _gpu(handle)
    return [int(g.min_limit_w * 1e3), int(g.max_limit_w * 1e3)]


@_api
def nvmlDeviceSetPowerManagementLimit(handle: _Handle, limit_mw: int) -> None:
    g = _gpu(handle)
    if not _S.allow_set_limit:
        raise NVMLError(NVML_ERROR_NO_PERMISSION)
    if not g.min_limit_w * 1e3 <= limit_mw <= g.max_limit_w * 1e3:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    _advance(g)
    if _S.state_file:
        limits = _load_limits() or {}
        limits[g.uuid] = limit_mw / 1e3
        _save_limits(limits)
    g.limit_w = limit_mw / 1e3
