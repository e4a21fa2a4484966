"""CPU package and DRAM energy of this node from RAPL (/sys/class/powercap), with counter wraparound handled."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

ROOT_ENV = "ENERGYBENCH_POWERCAP_ROOT"  # tests only: a fake sysfs tree instead of /sys/class/powercap
DEFAULT_ROOT = Path("/sys/class/powercap")


class RaplUnavailable(RuntimeError):
    """No readable RAPL package domain on this node; the message says why and what to do."""


@dataclass
class _Domain:
    path: Path  # the zone directory, e.g. /sys/class/powercap/intel-rapl:0
    kind: str  # package | dram
    max_uj: int  # the counter wraps to 0 after this value (max_energy_range_uj)
    last_uj: int
    total_uj: int = 0  # energy since open, wraps undone

    def update(self) -> None:
        raw = int((self.path / "energy_uj").read_text())
        delta = raw - self.last_uj
        if delta < 0:  # wrapped (assumes one wrap at most between reads: at 1 Hz that is certain)
            delta += self.max_uj
        self.total_uj += delta
        self.last_uj = raw


class Rapl:
    """Cumulative energy since `open`, summed over sockets: package (CPU) and DRAM domains.

    Read it at least once a wrap period (max_energy_range_uj / power, minutes on servers): the sampler
    process polls it at >= 1 Hz. Thread-safe.
    """

    def __init__(self, domains: list[_Domain], dram_note: str | None) -> None:
        self.domains = domains
        self.dram_note = dram_note  # why DRAM energy is null, when it is
        self._lock = threading.Lock()

    @classmethod
    def open(cls, root: Path | None = None) -> Rapl:
        """Find the package and DRAM zones under `root` (default /sys/class/powercap); RaplUnavailable if none."""
        root = Path(os.environ.get(ROOT_ENV, DEFAULT_ROOT)) if root is None else root
        zones = sorted(root.glob("intel-rapl:*")) if root.is_dir() else []
        if not zones:
            raise RaplUnavailable(f"no RAPL zones under {root} (not an x86 node with the intel_rapl powercap driver)")
        domains = []
        for zone in zones:
            try:
                name = (zone / "name").read_text().strip()
                kind = "package" if name.startswith("package") else "dram" if name == "dram" else None
                if kind:
                    raw = int((zone / "energy_uj").read_text())
                    domains.append(_Domain(zone, kind, int((zone / "max_energy_range_uj").read_text()), raw))
            except PermissionError:
                raise RaplUnavailable(f"permission denied reading {zone}/energy_uj (RAPL is root-only on most kernels "
                                      "since 2020; ask the site for read access, or use meter.cpu=none)") from None
            except (OSError, ValueError) as e:
                raise RaplUnavailable(f"cannot read {zone}: {e}") from None
        if not any(d.kind == "package" for d in domains):
            raise RaplUnavailable(f"no package domain among the RAPL zones under {root}")
        dram_note = None if any(d.kind == "dram" for d in domains) else f"no RAPL DRAM domain under {root}"
        return cls(domains, dram_note)

    def read_j(self) -> tuple[float, float | None]:
        """(package, DRAM) energy since open, joules, all sockets; DRAM is None where the node has no domain."""
        with self._lock:
            for d in self.domains:
                d.update()
            package = sum(d.total_uj for d in self.domains if d.kind == "package") / 1e6
            dram = sum(d.total_uj for d in self.domains if d.kind == "dram") / 1e6
        return package, None if self.dram_note else dram
