"""The NVML boundary: loads pynvml (or a stand-in named by $ENERGYBENCH_NVML_MODULE), translates its errors once."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, TypeVar

MODULE_ENV = "ENERGYBENCH_NVML_MODULE"  # tests only: import this module instead of pynvml
T = TypeVar("T")


class NvmlUnavailable(RuntimeError):
    """NVML cannot be used on this machine (no pynvml, no driver, no library); the message says why."""


class NvmlFault(RuntimeError):
    """One NVML call on one GPU failed; `code` is NVML's return code."""

    def __init__(self, gpu: str, call: str, code: int, text: str) -> None:
        super().__init__(f"{gpu}: {call} failed: NVML error {code} ({text})")
        self.gpu, self.call, self.code = gpu, call, code


def canonical_uuid(uuid: str) -> str:
    """UUID without its GPU-/MIG- prefix, lower case: NVML says 'GPU-8932f937-...', torch '8932f937-...'."""
    uuid = uuid.strip().lower()
    for prefix in ("gpu-", "mig-"):
        uuid = uuid.removeprefix(prefix)
    return uuid


def load_module() -> ModuleType:
    """The pynvml module (or the stand-in); NvmlUnavailable if it cannot be imported."""
    name = os.environ.get(MODULE_ENV, "pynvml")
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise NvmlUnavailable(f"cannot import {name} ({e}); install nvidia-ml-py") from None


@dataclass(frozen=True)
class GpuInfo:
    """A GPU as NVML lists it."""

    uuid: str  # NVML's form, 'GPU-<hex>'
    index: int  # NVML index (PCI bus order, as nvidia-smi numbers GPUs)
    name: str  # e.g. 'NVIDIA H100 80GB HBM3'


class Nvml:
    """An initialized NVML session (nvmlInit ... nvmlShutdown) of this process."""

    def __init__(self) -> None:
        self.lib = load_module()
        try:
            self.lib.nvmlInit()
        except self.lib.NVMLError as e:
            raise NvmlUnavailable(f"NVML did not initialize: {e} (code {e.value}); is the NVIDIA driver "
                                  "loaded on this node? (nvidia-smi should work)") from None
        self.codes = ErrorCodes(self.lib)
        self._closed = False

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.lib.nvmlShutdown()

    def driver_version(self) -> str:
        """The NVIDIA driver's version, e.g. '580.159.04'."""
        return _text(self.lib.nvmlSystemGetDriverVersion())

    def gpus(self) -> list[GpuInfo]:
        """Every GPU NVML sees on this node (NVML ignores CUDA_VISIBLE_DEVICES)."""
        found = []
        for i in range(self.lib.nvmlDeviceGetCount()):
            h = self.lib.nvmlDeviceGetHandleByIndex(i)
            found.append(GpuInfo(_text(self.lib.nvmlDeviceGetUUID(h)), i, _text(self.lib.nvmlDeviceGetName(h))))
        return found

    def gpu(self, info: GpuInfo) -> Gpu:
        """A handle to `info`'s GPU, looked up by UUID (never by position)."""
        try:
            handle = self.lib.nvmlDeviceGetHandleByUUID(info.uuid)
        except self.lib.NVMLError as e:
            raise NvmlFault(f"GPU {info.index} ({info.uuid})", "nvmlDeviceGetHandleByUUID", e.value, str(e)) from None
        return Gpu(self, info, handle)


class ErrorCodes:
    """NVML's return codes, as the loaded module defines them."""

    def __init__(self, lib: ModuleType) -> None:
        self.not_supported = lib.NVML_ERROR_NOT_SUPPORTED
        self.no_permission = lib.NVML_ERROR_NO_PERMISSION
        self.function_not_found = getattr(lib, "NVML_ERROR_FUNCTION_NOT_FOUND", 13)  # an older driver
        self.missing = (self.not_supported, self.function_not_found)


class Gpu:
    """One GPU of the job: the reads the meter and sampler make, and the power-limit write."""

    def __init__(self, nvml: Nvml, info: GpuInfo, handle: Any) -> None:
        self.nvml, self.lib, self.info, self.handle = nvml, nvml.lib, info, handle
        self.uuid, self.index, self.name = info.uuid, info.index, info.name
        self.label = f"GPU {info.index} ({info.uuid})"
        self._unsupported: set[str] = set()  # calls that answered NOT_SUPPORTED once: not asked again
        self.faults: list[str] = []  # optional reads refused (no permission), once each
        self.has_energy_counter = self._supported(lambda: self.energy_mj(), "nvmlDeviceGetTotalEnergyConsumption")

    def call(self, name: str, *args: Any) -> Any:
        """pynvml.<name>(handle, *args); errors become NvmlFault naming this GPU."""
        try:
            return getattr(self.lib, name)(self.handle, *args)
        except self.lib.NVMLError as e:
            raise NvmlFault(self.label, name, e.value, str(e)) from None

    def _supported(self, read: Callable[[], Any], name: str) -> bool:
        try:
            read()
            return True
        except NvmlFault as e:
            if e.code in self.nvml.codes.missing:
                self._unsupported.add(name)
                return False
            raise

    def optional(self, name: str, *args: Any, pick: Callable[[Any], T] = lambda v: v) -> T | None:
        """A read this GPU may not offer: None (and not asked again) when NVML says it is unsupported or
        refuses it (no permission, recorded in `.faults`); other errors raise NvmlFault."""
        if name in self._unsupported:
            return None
        try:
            return pick(self.call(name, *args))
        except NvmlFault as e:
            codes = self.nvml.codes
            if e.code not in (*codes.missing, codes.no_permission):
                raise
            self._unsupported.add(name)
            if e.code == codes.no_permission:
                self.faults.append(str(e))
            return None

    def energy_mj(self) -> int:
        """Total energy since the driver loaded, millijoules (Volta and newer)."""
        return int(self.call("nvmlDeviceGetTotalEnergyConsumption"))

    def power_fields_w(self) -> tuple[float | None, float | None]:
        """(instant, 1 s average) board power in watts from NVML field values; None where unsupported."""
        if "fields" in self._unsupported:
            return None, None
        ids = [self.lib.NVML_FI_DEV_POWER_INSTANT, self.lib.NVML_FI_DEV_POWER_AVERAGE]
        values = self.call("nvmlDeviceGetFieldValues", ids)
        out = [_field_value(v) / 1e3 if v.nvmlReturn == 0 else None for v in values]  # mW -> W
        if out == [None, None]:
            self._unsupported.add("fields")
        return out[0], out[1]

    def power_usage_w(self) -> float | None:
        """nvmlDeviceGetPowerUsage in watts (instant before Ampere; a 1 s average on Ampere and newer)."""
        return self.optional("nvmlDeviceGetPowerUsage", pick=lambda mw: mw / 1e3)

    def throttle_reasons(self) -> int | None:
        """Bitmask of clock event (throttle) reasons."""
        if hasattr(self.lib, "nvmlDeviceGetCurrentClocksEventReasons"):
            return self.optional("nvmlDeviceGetCurrentClocksEventReasons")
        return self.optional("nvmlDeviceGetCurrentClocksThrottleReasons")

    # power limits (watts); the write needs root
    def limit_w(self) -> float:
        return self.call("nvmlDeviceGetPowerManagementLimit") / 1e3

    def enforced_limit_w(self) -> float:
        return self.call("nvmlDeviceGetEnforcedPowerLimit") / 1e3

    def constraints_w(self) -> tuple[float, float]:
        lo, hi = self.call("nvmlDeviceGetPowerManagementLimitConstraints")
        return lo / 1e3, hi / 1e3

    def set_limit_w(self, watts: float) -> None:
        self.call("nvmlDeviceSetPowerManagementLimit", int(round(watts * 1e3)))


_VALUE_MEMBERS = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal"}  # nvmlValueType_t


def _field_value(v: Any) -> float:
    return float(getattr(v.value, _VALUE_MEMBERS.get(v.valueType, "uiVal")))


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
