"""RAPL from a fake /sys/class/powercap tree: sockets summed, wraparound undone, unreadable -> null with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from energybench.device.rapl import Rapl, RaplUnavailable
from energybench.energy.session import open_rapl

MAX_UJ = 262_143_328_850


def zone(root: Path, name: str, label: str, energy_uj: int) -> Path:
    z = root / name
    z.mkdir(parents=True)
    (z / "name").write_text(label + "\n")
    (z / "energy_uj").write_text(f"{energy_uj}\n")
    (z / "max_energy_range_uj").write_text(f"{MAX_UJ}\n")
    return z


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    root = tmp_path / "powercap"
    zone(root, "intel-rapl:0", "package-0", 1_000_000)
    zone(root, "intel-rapl:0:0", "dram", 500_000)
    zone(root, "intel-rapl:0:1", "core", 10)  # a subdomain of the package: not added again
    zone(root, "intel-rapl:1", "package-1", MAX_UJ - 2_000_000)  # about to wrap
    zone(root, "intel-rapl-mmio:0", "package-0", 7)  # the same package through MMIO: ignored
    return root


def bump(root: Path, name: str, energy_uj: int) -> None:
    (root / name / "energy_uj").write_text(f"{energy_uj}\n")


def test_packages_summed_dram_separate_and_wraparound_undone(sysfs: Path) -> None:
    rapl = Rapl.open(sysfs)
    assert rapl.read_j() == (0.0, 0.0)
    bump(sysfs, "intel-rapl:0", 4_000_000)  # +3 J
    bump(sysfs, "intel-rapl:1", 1_000_000)  # wrapped: +2 J to the top, +1 J after
    bump(sysfs, "intel-rapl:0:0", 1_500_000)  # +1 J
    bump(sysfs, "intel-rapl:0:1", 99_999_999)
    package_j, dram_j = rapl.read_j()
    assert package_j == pytest.approx(3 + 2 + 1)
    assert dram_j == pytest.approx(1.0)


def test_no_dram_domain_is_null_with_a_note(sysfs: Path) -> None:
    for f in (sysfs / "intel-rapl:0:0").iterdir():
        f.unlink()
    (sysfs / "intel-rapl:0:0").rmdir()
    rapl = Rapl.open(sysfs)
    assert rapl.read_j()[1] is None and "no RAPL DRAM domain" in rapl.dram_note


def test_missing_or_unreadable_rapl_is_a_reason_not_a_zero(tmp_path: Path, sysfs: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(RaplUnavailable, match="no RAPL zones under"):
        Rapl.open(tmp_path / "nowhere")
    real_read = Path.read_text

    def denied(self: Path, *args, **kwargs) -> str:
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", denied)
    with pytest.raises(RaplUnavailable, match="permission denied reading .*energy_uj .*meter.cpu=none"):
        Rapl.open(sysfs)
    monkeypatch.setenv("ENERGYBENCH_POWERCAP_ROOT", str(sysfs))
    rapl, notes, error = open_rapl("auto", "node1")  # auto: a note, the point goes on
    assert rapl is None and error is None and "CPU energy not measured: permission denied" in notes[0]
    rapl, notes, error = open_rapl("rapl", "node1")  # rapl: the point fails, saying why
    assert rapl is None and "meter.cpu=rapl needs it" in error
