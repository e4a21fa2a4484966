"""A GPU's power limits for one point, typed: what power/ sets and reads back, and energy/ records on its rows."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GpuLimit:
    """One GPU's limits for this point, watts."""

    uuid: str  # NVML UUID, 'GPU-...'
    index: int  # NVML index
    power_cap_w: float | None  # requested (None: left as found)
    found_limit_w: float  # power management limit before the point
    enforced_limit_w: float  # enforced limit read back after applying

    def sample_columns(self) -> dict[str, float | None]:
        """The limit columns repeated on each of this GPU's sample rows (schema SAMPLES)."""
        return {"power_cap_w": self.power_cap_w, "enforced_limit_w": self.enforced_limit_w}

    def gpu_columns(self) -> dict[str, float | None]:
        """The limit columns of this GPU's gpus.parquet row (schema GPUS)."""
        return {"power_cap_w": self.power_cap_w, "found_limit_w": self.found_limit_w,
                "enforced_limit_w": self.enforced_limit_w}


NO_LIMIT_COLUMNS: dict[str, float | None] = {"power_cap_w": None, "found_limit_w": None, "enforced_limit_w": None}
