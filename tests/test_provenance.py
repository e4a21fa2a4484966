"""Provenance: the commit is read from git, stated for a copied tree, or said to be unknown; never guessed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import energybench
from energybench import provenance

ROOT = Path(energybench.__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def fresh_cache():
    provenance.code.cache_clear()
    yield
    provenance.code.cache_clear()


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="the package is not imported from a git checkout")
def test_git_checkout_names_its_commit(monkeypatch):
    monkeypatch.delenv(provenance.SOURCE_COMMIT_ENV, raising=False)
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    code = provenance.code()
    assert code["code_source"] == "git"
    assert code["git_commit"] == head and len(head) == 40
    status = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                            capture_output=True, text=True).stdout
    assert code["git_dirty"] is bool(status.strip())


def _copied_package(tmp_path: Path, monkeypatch) -> None:
    pkg = tmp_path / "site" / "energybench"
    pkg.mkdir(parents=True)
    monkeypatch.setattr(energybench, "__file__", str(pkg / "__init__.py"))


def test_copied_tree_uses_the_stated_commit(tmp_path, monkeypatch):
    _copied_package(tmp_path, monkeypatch)
    monkeypatch.setenv(provenance.SOURCE_COMMIT_ENV, "a" * 40)
    monkeypatch.setenv(provenance.SOURCE_DIRTY_ENV, "0")
    assert provenance.code() == {"git_commit": "a" * 40, "git_dirty": False, "code_source": "stated",
                                 "energybench_version": energybench.__version__}


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="the package is not imported from a git checkout")
def test_stated_commit_wins_over_a_git_beside_the_copy(monkeypatch):
    monkeypatch.setenv(provenance.SOURCE_COMMIT_ENV, "b" * 40)
    monkeypatch.delenv(provenance.SOURCE_DIRTY_ENV, raising=False)
    code = provenance.code()
    assert (code["git_commit"], code["code_source"], code["git_dirty"]) == ("b" * 40, "stated", None)


def test_installed_package_says_so_instead_of_guessing(tmp_path, monkeypatch):
    _copied_package(tmp_path, monkeypatch)
    monkeypatch.delenv(provenance.SOURCE_COMMIT_ENV, raising=False)
    code = provenance.code()
    assert code["code_source"] == "installed package"
    assert code["git_commit"] is None and code["git_dirty"] is None


def test_command_is_the_sweeps_for_every_process_below(monkeypatch):
    monkeypatch.setenv(provenance.COMMAND_ENV, "")  # so that monkeypatch restores it after the test
    monkeypatch.delenv(provenance.COMMAND_ENV)
    provenance.remember_command(["-m", "model=7b", "batch=16,32"], "python -m energybench.sweep")
    assert provenance.command() == "python -m energybench.sweep -m model=7b batch=16,32"
    provenance.remember_command(["other"], "python -m energybench.sweep")  # a rank below keeps the sweep's
    assert provenance.command() == "python -m energybench.sweep -m model=7b batch=16,32"


def test_record_has_every_field_and_software_versions():
    rec = provenance.record()
    assert set(provenance.FIELDS) <= set(rec)
    assert rec["torch_version"] and rec["python_version"]


def test_driver_version_comes_from_nvml(fake_nvml):
    assert provenance.driver_version() == "580.00.00-fake"


def test_a_benchmark_record_names_the_cards_it_saw(monkeypatch):
    import torch

    assert provenance.cards() == {"gpu_uuids": []}  # this machine: no CUDA

    class Props:  # torch.cuda.get_device_properties(i).uuid: hex without NVML's prefix
        def __init__(self, i: int) -> None:
            self.uuid = f"8932f937-0000-0000-0000-00000000000{i}"

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_properties", Props)
    rec = provenance.benchmark_record()
    assert rec["gpu_uuids"] == ["GPU-8932f937-0000-0000-0000-000000000000", "GPU-8932f937-0000-0000-0000-000000000001"]
    assert set(provenance.FIELDS) <= set(rec)
