"""Known GPUs: memory bandwidth, board power (TDP) and memory, from the vendor datasheets (docs/methodology.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Card:
    name: str  # short name shown in tables and figures
    mem_bandwidth_gb_s: float  # peak HBM bandwidth, 10^9 bytes/s, as the datasheet states it
    tdp_w: float  # maximum board power (TDP/TGP) of this form factor, watts
    memory_gb: float  # memory per GPU, GB as the datasheet states it
    source: str  # datasheet the numbers come from


_V100 = "https://images.nvidia.com/content/technologies/volta/pdf/volta-v100-datasheet-update-us-1165301-r5.pdf"
_A100 = ("https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/"
         "nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf")
_H100 = "https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet"
_H100_PCIE = "NVIDIA H100 PCIe GPU product brief, PB-11133-001_v02 (Nov 2022)"
_H200 = "https://www.nvidia.com/en-us/data-center/h200/"

# (pattern on the NVML device name, card); first match wins, so specific forms come first.
CARDS: tuple[tuple[str, Card], ...] = (
    (r"V100S", Card("V100S PCIe 32GB", 1134, 250, 32, _V100)),
    (r"V100.*PCIE", Card("V100 PCIe 32GB", 900, 250, 32, _V100)),
    (r"V100", Card("V100 SXM2 32GB", 900, 300, 32, _V100)),
    (r"A100.*80GB.*PCIE|A100.*PCIE.*80GB", Card("A100 PCIe 80GB", 1935, 300, 80, _A100)),
    (r"A100.*PCIE", Card("A100 PCIe 40GB", 1555, 250, 40, _A100)),
    (r"A100.*80GB", Card("A100 SXM4 80GB", 2039, 400, 80, _A100)),
    (r"A100", Card("A100 SXM4 40GB", 1555, 400, 40, _A100)),
    (r"H100.*NVL", Card("H100 NVL 94GB", 3900, 400, 94, _H100)),
    (r"H100.*PCIE", Card("H100 PCIe 80GB", 2000, 350, 80, _H100_PCIE)),
    (r"H100", Card("H100 SXM5 80GB", 3350, 700, 80, _H100)),
    (r"H200.*NVL", Card("H200 NVL 141GB", 4800, 600, 141, _H200)),
    (r"H200", Card("H200 SXM 141GB", 4800, 700, 141, _H200)),
)


def card_for(gpu_name: str | None) -> Card | None:
    """The known card an NVML name (e.g. "NVIDIA H100 80GB HBM3") or a short name (e.g. "A100-80GB") names.

    None for a CPU, a missing name or a card not in CARDS (add it there, with its datasheet).
    """
    if not gpu_name or not isinstance(gpu_name, str):
        return None
    key = re.sub(r"[\s_-]+", " ", gpu_name.upper())
    for pattern, card in CARDS:
        if re.search(pattern, key):
            return card
    return None


def cards_table() -> list[dict]:
    """The known cards as rows (for docs, reports and notebooks)."""
    return [{"card": c.name, "mem_bandwidth_gb_s": c.mem_bandwidth_gb_s, "tdp_w": c.tdp_w,
             "memory_gb": c.memory_gb, "source": c.source} for _, c in CARDS]
