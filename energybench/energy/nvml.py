"""Former home of the NVML boundary, now energybench.device.nvml; these names stay importable from here."""

from energybench.device.nvml import (  # noqa: F401
    MODULE_ENV, ErrorCodes, Gpu, GpuInfo, Nvml, NvmlFault, NvmlUnavailable, canonical_uuid, load_module,
)
