"""Which code, software and command made a result: the provenance every run row and benchmark record carries.

`code_source` says how the commit is known, never guessed:
- "stated": the tree is a copy (e.g. sent to a GPU machine) and whoever copied it stated the commit
  in $ENERGYBENCH_SOURCE_COMMIT (and $ENERGYBENCH_SOURCE_DIRTY = 0|1). A stated commit wins over a
  .git found beside the package: a copied tree may carry a .git of another commit (seen on the lent
  GPU machines: their copy's .git was the landed main, under the files of a later commit);
- "git": read from the git checkout the package was imported from (`git_dirty` from `git status`);
- "installed package": imported from an installed (non-git) package: no commit, only the version.
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import energybench

COMMAND_ENV = "ENERGYBENCH_COMMAND"  # the user's command, set by the sweep entry point for every process below
SOURCE_COMMIT_ENV = "ENERGYBENCH_SOURCE_COMMIT"
SOURCE_DIRTY_ENV = "ENERGYBENCH_SOURCE_DIRTY"

# Columns of run.parquet (results.schema.RUN) and keys of benchmark records that this module fills.
FIELDS = ("git_commit", "git_dirty", "code_source", "energybench_version", "python_version", "torch_version",
          "cuda_version", "driver_version", "nccl_version", "command")


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@lru_cache(maxsize=1)
def code() -> dict:
    """{git_commit, git_dirty, code_source, energybench_version} of the imported energybench package."""
    root = Path(energybench.__file__).resolve().parent.parent
    version = energybench.__version__
    stated = os.environ.get(SOURCE_COMMIT_ENV)
    if stated:
        dirty = os.environ.get(SOURCE_DIRTY_ENV)
        return {"git_commit": stated, "git_dirty": None if dirty is None else dirty == "1",
                "code_source": "stated", "energybench_version": version}
    if (root / ".git").exists():
        commit = _git(root, "rev-parse", "HEAD")
        status = _git(root, "status", "--porcelain", "--untracked-files=no")
        if commit:
            return {"git_commit": commit, "git_dirty": bool(status), "code_source": "git",
                    "energybench_version": version}
    return {"git_commit": None, "git_dirty": None, "code_source": "installed package",
            "energybench_version": version}


def command() -> str:
    """The user's command line: the sweep's (passed down in $ENERGYBENCH_COMMAND), else this process's."""
    return os.environ.get(COMMAND_ENV) or shlex.join([Path(sys.executable).name, *sys.argv])


def remember_command(argv: list[str], prog: str) -> None:
    """Record the user's command (`prog` + argv) for every process and job the sweep starts from here."""
    os.environ.setdefault(COMMAND_ENV, shlex.join([*shlex.split(prog), *argv]))


def software() -> dict:
    """{python_version, torch_version, cuda_version, driver_version, nccl_version}; null where not there."""
    out: dict = {"python_version": platform.python_version(), "torch_version": None, "cuda_version": None,
                 "driver_version": None, "nccl_version": None}
    try:
        import torch
    except ImportError:
        return out
    out["torch_version"] = torch.__version__
    out["cuda_version"] = torch.version.cuda
    if torch.cuda.is_available():
        try:
            out["nccl_version"] = ".".join(str(v) for v in torch.cuda.nccl.version())
        except (AttributeError, RuntimeError):
            pass
        out["driver_version"] = driver_version()
    return out


def driver_version() -> str | None:
    """The NVIDIA driver's version through NVML, or None where NVML cannot be used."""
    from energybench.device.nvml import Nvml, NvmlUnavailable

    try:
        nvml = Nvml()
    except NvmlUnavailable:
        return None
    try:
        return nvml.driver_version()
    finally:
        nvml.close()


def record() -> dict:
    """Every provenance field (FIELDS) of this process, for a run row or a benchmark record."""
    return {**code(), **software(), "command": command()}


def cards() -> dict:
    """{"gpu_uuids": [...]}: the UUIDs (NVML's 'GPU-<hex>' form) of the CUDA devices this process sees, in CUDA's
    order; [] without CUDA. Which physical cards made a record: cards of one model differ in power by a few % (run
    rows name theirs per GPU in gpu_uuid)."""
    try:
        import torch
    except ImportError:
        return {"gpu_uuids": []}
    if not torch.cuda.is_available():
        return {"gpu_uuids": []}
    uuids = [str(torch.cuda.get_device_properties(i).uuid) for i in range(torch.cuda.device_count())]
    return {"gpu_uuids": [u if u.startswith("GPU-") else f"GPU-{u}" for u in uuids]}


def benchmark_record() -> dict:
    """record() and cards(): the provenance of a benchmark record."""
    return {**record(), **cards()}
