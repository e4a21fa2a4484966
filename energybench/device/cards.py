"""The one GPU card table (memory, memory bandwidth, board power) from datasheets, plus a site's own cards.

A site adds cards without touching the package: a YAML file named by `$ENERGYBENCH_CARDS` (several joined
by os.pathsep), or a `cards.yaml` in a folder of `$ENERGYBENCH_CONFIG_PATH` (the site preset folders). Site
cards come before the built-in ones, so a site card also overrides a built-in one it matches first. No torch
here: analysis/ reads this table.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

from energybench.config import ConfigError

CARDS_ENV = "ENERGYBENCH_CARDS"  # YAML files of site cards, os.pathsep-separated
CONFIG_PATH_ENV = "ENERGYBENCH_CONFIG_PATH"  # site preset folders; a cards.yaml in one is read too
CARDS_FILE = "cards.yaml"


class CardError(ConfigError):
    """A site cards file that cannot be read; the message names the file, the card, the key and the fix."""


@dataclass(frozen=True)
class Card:
    name: str  # short name shown in tables and figures
    mem_bandwidth_gb_s: float  # peak memory bandwidth, 10^9 bytes/s, as the datasheet states it
    tdp_w: float  # maximum board power (TDP/TGP) of this form factor, watts: the highest power limit
    # Memory per GPU as the datasheet states it. Vendors' "32GB" on HBM cards is 32 GiB (nvidia-smi: V100
    # 32510 MiB, A100 81920 MiB), so the pre-flight memory check (energybench.memory) reads it as GiB.
    memory_gb: float
    source: str  # datasheet the numbers come from
    match: str = ""  # regex on the NVML name (any case; runs of blanks, '-' and '_' read as one space)
    gpu_types: tuple[str, ...] = ()  # the cluster.gpu_type names presets use for it, e.g. "A100-80GB"


_V100 = "https://images.nvidia.com/content/technologies/volta/pdf/volta-v100-datasheet-update-us-1165301-r5.pdf"
_A100 = ("https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/"
         "nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf")
_A10 = "NVIDIA A10 Tensor Core GPU datasheet"
_L40S = "NVIDIA L40S GPU datasheet"
_H100 = "https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet"
_H100_PCIE = "NVIDIA H100 PCIe GPU product brief, PB-11133-001_v02 (Nov 2022)"
_H200 = "https://www.nvidia.com/en-us/data-center/h200/"

# First match wins, so specific forms come first.
CARDS: tuple[Card, ...] = (
    Card("V100S PCIe 32GB", 1134, 250, 32, _V100, r"V100S"),
    Card("V100 PCIe 32GB", 900, 250, 32, _V100, r"V100.*PCIE"),
    Card("V100 SXM2 16GB", 900, 300, 16, _V100, r"V100.*16GB", ("V100-16GB",)),
    Card("V100 SXM2 32GB", 900, 300, 32, _V100, r"V100", ("V100-32GB",)),
    Card("A100 PCIe 80GB", 1935, 300, 80, _A100, r"A100.*80GB.*PCIE|A100.*PCIE.*80GB"),
    Card("A100 PCIe 40GB", 1555, 250, 40, _A100, r"A100.*PCIE"),
    Card("A100 SXM4 80GB", 2039, 400, 80, _A100, r"A100.*80GB", ("A100-80GB",)),
    Card("A100 SXM4 40GB", 1555, 400, 40, _A100, r"A100", ("A100-40GB",)),
    Card("A10 24GB", 600, 150, 24, _A10, r"\bA10\b", ("A10-24GB",)),
    Card("L40S 48GB", 864, 350, 48, _L40S, r"L40S", ("L40S-48GB",)),
    Card("H100 NVL 94GB", 3900, 400, 94, _H100, r"H100.*NVL", ("H100-94GB",)),
    Card("H100 PCIe 80GB", 2000, 350, 80, _H100_PCIE, r"H100.*PCIE"),
    Card("H100 SXM5 80GB", 3350, 700, 80, _H100, r"H100", ("H100-80GB",)),
    Card("H200 NVL 141GB", 4800, 600, 141, _H200, r"H200.*NVL"),
    Card("H200 SXM 141GB", 4800, 700, 141, _H200, r"H200", ("H200-141GB",)),
)


def known_cards() -> tuple[Card, ...]:
    """Site cards (in the order of their files), then the built-in ones; CardError for a bad site file."""
    site = [card for path in site_card_files() for card in _read_cards(str(path), path.stat().st_mtime_ns)]
    return (*site, *CARDS)


def card_for(gpu_name: str | None) -> Card | None:
    """The card an NVML name (e.g. "NVIDIA H100 80GB HBM3") or a preset's gpu_type (e.g. "A100-80GB") names:
    a card listing it among its gpu_types, else the first whose pattern matches. None for a CPU, a missing
    name or a card not in the table (add it: docs/extending.md, "Add a GPU card")."""
    if not gpu_name or not isinstance(gpu_name, str):
        return None
    cards = known_cards()
    return next((c for c in cards if _is_type(c, gpu_name)), None) or next(
        (c for c in cards if c.match and re.search(c.match, _key(gpu_name), re.IGNORECASE)), None)


def card_for_type(gpu_type: str | None) -> Card | None:
    """The card a preset's cluster.gpu_type names exactly (one of its gpu_types), else None."""
    if not gpu_type:
        return None
    return next((c for c in known_cards() if _is_type(c, gpu_type)), None)


def cards_table() -> list[dict]:
    """The known cards as rows (for docs, reports and notebooks)."""
    return [{"card": c.name, "mem_bandwidth_gb_s": c.mem_bandwidth_gb_s, "tdp_w": c.tdp_w,
             "memory_gb": c.memory_gb, "source": c.source} for c in known_cards()]


def site_card_files() -> list[Path]:
    """The site's card files: each file of $ENERGYBENCH_CARDS (it must exist), then the cards.yaml of each
    folder of $ENERGYBENCH_CONFIG_PATH that has one."""
    files = []
    for entry in _entries(CARDS_ENV):
        path = Path(entry).expanduser()
        if not path.is_file():
            raise CardError(f"{CARDS_ENV}={os.environ[CARDS_ENV]}: {entry} is not a file; point it to a YAML "
                            f"file of cards (docs/extending.md, \"Add a GPU card\")")
        files.append(path)
    for entry in _entries(CONFIG_PATH_ENV):
        if entry.startswith("pkg://"):
            continue  # a Hydra package entry: no site folder
        path = Path(entry.removeprefix("file://")).expanduser() / CARDS_FILE
        if path.is_file():
            files.append(path)
    return files


def _entries(env: str) -> list[str]:
    return [e for e in os.environ.get(env, "").split(os.pathsep) if e.strip()]


def _key(gpu_name: str) -> str:
    return re.sub(r"[\s_-]+", " ", gpu_name.upper())


def _is_type(card: Card, gpu_name: str) -> bool:
    return gpu_name.strip().upper() in (t.upper() for t in card.gpu_types)


REQUIRED = ("name", "mem_bandwidth_gb_s", "tdp_w", "memory_gb", "source")
NUMBERS = ("mem_bandwidth_gb_s", "tdp_w", "memory_gb")


@lru_cache(maxsize=32)
def _read_cards(path: str, mtime_ns: int) -> tuple[Card, ...]:
    """The cards of one site file (read again when it changes: the mtime is part of the cache key)."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise CardError(f"{path}: cannot read it as YAML ({' '.join(str(e).split())})") from None
    entries = data.get("cards") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise CardError(f"{path}: expected a mapping with a list under 'cards:' "
                        "(docs/extending.md, \"Add a GPU card\")")
    return tuple(_card(path, i, entry) for i, entry in enumerate(entries))


def _card(path: str, i: int, entry: Any) -> Card:
    where = f"{path}: card {i + 1}" + (f" ({entry.get('name')})" if isinstance(entry, dict) and "name" in entry else "")
    if not isinstance(entry, dict):
        raise CardError(f"{where}: expected a mapping of {', '.join(REQUIRED)}, match and/or gpu_types")
    known = {f.name for f in fields(Card)}
    unknown = sorted(set(entry) - known)
    missing = [k for k in REQUIRED if entry.get(k) in (None, "")]
    if unknown or missing:
        what = f"unknown key {unknown[0]!r}" if unknown else f"{missing[0]} is missing"
        raise CardError(f"{where}: {what}; a card has {', '.join(sorted(known))}")
    for k in NUMBERS:
        if isinstance(entry[k], bool) or not isinstance(entry[k], (int, float)) or entry[k] <= 0:
            raise CardError(f"{where}: {k}={entry[k]!r} must be a positive number")
    types = entry.get("gpu_types") or ()
    types = (types,) if isinstance(types, str) else tuple(str(t) for t in types)
    match = str(entry.get("match") or "")
    if not match and not types:
        raise CardError(f"{where}: give match (a regex on the NVML name) and/or gpu_types (cluster.gpu_type names)")
    try:
        re.compile(match)
    except re.error as e:
        raise CardError(f"{where}: match={match!r} is not a regular expression ({e})") from None
    return Card(str(entry["name"]), float(entry["mem_bandwidth_gb_s"]), float(entry["tdp_w"]),
                float(entry["memory_gb"]), str(entry["source"]), match, types)
