"""device/ and util/ sit at the bottom: nothing in them imports the layers above (energy, power, results, ...)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "energybench"
# what each bottom package may import from energybench
ALLOWED = {
    "util": set(),
    "device": {"energybench.config", "energybench.distributed", "energybench.device", "energybench.util"},
}


def energybench_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
        found |= {n for n in names if n == "energybench" or n.startswith("energybench.")}
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_bottom_packages_import_nothing_above_them(package: str) -> None:
    for path in sorted((PACKAGE / package).glob("*.py")):
        above = {m for m in energybench_imports(path)
                 if not any(m == a or m.startswith(a + ".") for a in ALLOWED[package])}
        assert not above, f"{path.relative_to(PACKAGE.parent)} imports {sorted(above)}"


def test_energy_and_power_are_siblings_over_device() -> None:
    """power/ and energy/ meet only in device/ (GpuLimit, Gpu): neither imports the other."""
    for upper, other in (("power", "energybench.energy"), ("energy", "energybench.power")):
        for path in sorted((PACKAGE / upper).glob("*.py")):
            assert not {m for m in energybench_imports(path) if m.startswith(other)}, path


def test_old_homes_still_export_the_moved_names() -> None:
    from energybench.device import gpus, nvml, rapl
    from energybench.energy import gpus as old_gpus, nvml as old_nvml, rapl as old_rapl
    from energybench.results import hardware, metrics, store
    from energybench.util import files, numbers

    assert (old_nvml.Nvml, old_gpus.job_gpus, old_rapl.Rapl) == (nvml.Nvml, gpus.job_gpus, rapl.Rapl)
    assert (metrics.ratio, metrics.sum_or_none, metrics.mean_or_none) == \
        (numbers.ratio, numbers.sum_or_none, numbers.mean_or_none)
    assert (store.write_parquet, store.write_text) == (files.write_parquet, files.write_text)
    from energybench.device import cards
    assert (hardware.card_for, hardware.cards_table) == (cards.card_for, cards.cards_table)
