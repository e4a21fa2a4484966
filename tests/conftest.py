"""Shared fixtures: paths to ../shared, composed configs, and the gpu/slurm markers' skip rules."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared() -> Path:
    """../shared beside the checkout (CI, /work/main); from a worktree one level deeper, the nearest parent's."""
    for parent in REPO.parents:
        if (parent / "shared" / "datasets").is_dir():
            return parent / "shared"
    return REPO.parent / "shared"


SHARED = _shared()


def _gpu_reason() -> str | None:
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA GPU on this machine"
    return None


# Without a GPU, Triton kernels (model/gemv.py's) run under Triton's interpreter on host tensors. Triton reads the
# switch when its language module is first imported, so it is set here, before any test imports it.
if _gpu_reason() is not None:
    os.environ.setdefault("TRITON_INTERPRET", "1")


def _slurm_reason() -> str | None:
    if shutil.which("sinfo") is None:
        return "Slurm is not installed (scripts/slurm-test-cluster.sh start sets up the test cluster)"
    try:
        subprocess.run(["sinfo", "-h"], check=True, capture_output=True, timeout=10)
    except (subprocess.SubprocessError, OSError):
        return "no Slurm controller answers (scripts/slurm-test-cluster.sh start)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reasons = {"gpu": _gpu_reason, "slurm": _slurm_reason}
    cache: dict[str, str | None] = {}
    for item in items:
        for marker, why in reasons.items():
            if marker in item.keywords:
                if marker not in cache:
                    cache[marker] = why()
                if cache[marker]:
                    item.add_marker(pytest.mark.skip(reason=cache[marker]))


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """../shared/datasets (real GSM8K and Alpaca); tests using it skip where it is absent."""
    path = SHARED / "datasets"
    if not path.is_dir():
        pytest.skip(f"{path} is absent (the shared datasets live beside the checkout)")
    return path


@pytest.fixture(scope="session")
def llama_tokenizer_path() -> Path:
    path = SHARED / "tokenizers" / "llama" / "tokenizer.model"
    if not path.is_file():
        pytest.skip(f"{path} is absent (LLaMA's tokenizer lives in ../shared)")
    return path


@pytest.fixture
def quick(tmp_path: Path):
    """compose(...) of the quickstart experiment writing under tmp_path, small enough for unit tests."""
    from energybench.confload import compose

    def make(*overrides: str):
        return compose(["experiment=quickstart", "samples=8", "batch=4", "max_tokens=8",
                        f"out_dir={tmp_path / 'out'}", *overrides])

    return make


@pytest.fixture
def fake_nvml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """The fake `pynvml` (tests/fake_pynvml.py) in place of the real one, with three scripted H100s
    (GPU-aaaaaaaa-..., GPU-bbbbbbbb-..., GPU-cccccccc-...); call `.configure(...)` to script others.
    Child processes (the node's sampler) see the same GPUs: configure also writes $FAKE_NVML_SPEC."""
    import fake_pynvml

    spec = tmp_path / "fake-nvml-spec.json"
    monkeypatch.setenv("ENERGYBENCH_NVML_MODULE", "fake_pynvml")
    monkeypatch.setenv("FAKE_NVML_SPEC", str(spec))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), str(REPO / "tests"),
                                                                    os.environ.get("PYTHONPATH")])))
    monkeypatch.setattr(fake_pynvml, "SHARED_SPEC", spec)
    fake_pynvml.configure(fake_pynvml.FAKE_GPUS)
    return fake_pynvml
