"""A persistent, keyed folder for torch.compile's caches, so a point whose shapes were compiled before is ready
in seconds, also in a fresh process (under Slurm every point is its own job).

`compile_cache=auto` (default) is <energybench cache>/compile ($XDG_CACHE_HOME/energybench/compile), `off`
keeps nothing past the process (a private temporary folder), any other value is a folder (e.g. one on the
cluster's shared file system, so every node reuses what one compiled). Inside it, one sub-folder per key:

    <root>/<model>-s<shards>-<key[:16]>/   TORCHINDUCTOR_CACHE_DIR (FX graphs, AOTAutograd, Triton kernels)
    <root>/<model>-s<shards>-<key[:16]>/key.json   what the key hashes, for a person to read

The key hashes everything that makes compiled code valid: torch, CUDA and Triton versions, the device
(name and compute capability), dtype, shards, the model's shape, and the source of energybench's model and
engine code. A changed model, torch, card or engine code gets a new folder and compiles cold; torch's own
cache keys (graph, guards, versions) stay under ours. Inductor writes entries atomically (write, then
rename), so concurrent jobs may share a folder.

Cold or warm is read from torch's own counters: `compile_cache_hits` and `compile_cache_misses` count FX graph
and AOTAutograd cache hits and misses while the engine was built: a warm start has hits and no misses. An
engine that compiles nothing (`reference`, or `fast` on CPU) has 0 and 0 and no `compile_cache_dir`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import shutil
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from energybench.config import ModelConfig, to_mapping
from energybench.util.files import cache_dir, write_text

log = logging.getLogger("energybench.engine")

ENV_VARS = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")
_SOURCES = ("model", "engine")  # energybench packages whose code the compiled graphs come from


class CompileCacheError(ValueError):
    """A compile_cache setting that cannot be used; the message names the value and the fix."""


def root_for(setting: str, environ: dict[str, str] | None = None) -> Path | None:
    """The cache root `setting` names: auto -> <energybench cache>/compile; off -> None (either in any case);
    else the folder, which must be absolute (config checks it; jobs start in other directories)."""
    keyword = setting.strip().lower()
    if keyword == "off":
        return None
    if keyword == "auto":
        return cache_dir(os.environ if environ is None else environ) / "compile"
    folder = Path(setting.strip()).expanduser()
    if not folder.is_absolute():
        raise CompileCacheError(f"compile_cache={setting!r}: give auto, off or an absolute folder "
                                "(compile_cache=/shared/energybench-compile)")
    return folder


def _source_digest() -> str:
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for package in _SOURCES:
        for path in sorted((root / package).glob("*.py")):
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def model_shape(model: ModelConfig) -> dict:
    """The model config's fields that shape compiled code: all but where the weights and tokenizer come from."""
    return {k: v for k, v in to_mapping(model).items() if k not in ("weights", "path", "tokenizer")}


def key_facts(model: dict, device: torch.device, dtype: torch.dtype, shards: int) -> dict:
    """What a compiled entry depends on; `model` is the model's shape (name, dims, layers, heads, vocab ...)."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        where = {"device": torch.cuda.get_device_name(device), "capability": f"{major}.{minor}"}
    else:
        where = {"device": device.type, "machine": platform.machine()}
    return {"torch": torch.__version__, "cuda": torch.version.cuda, "triton": _version("triton"), **where,
            "dtype": str(dtype).removeprefix("torch."), "shards": shards, "model": model,
            "energybench_source": _source_digest()}


def folder_name(facts: dict) -> str:
    key = hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()
    return f"{facts['model'].get('name', 'model')}-s{facts['shards']}-{key[:16]}"


def _counts() -> tuple[int, int]:
    """(hits, misses) of the FX graph and AOTAutograd caches in this process so far."""
    from torch._dynamo.utils import counters

    inductor, aot = counters["inductor"], counters["aot_autograd"]
    return (inductor["fxgraph_cache_hit"] + aot["autograd_cache_hit"],
            inductor["fxgraph_cache_miss"] + aot["autograd_cache_miss"])


@dataclass
class CacheUse:
    """Where the compile cache of an engine build lived, and how it went (filled by `use` and `measure`)."""

    directory: Path | None  # the keyed folder (a temporary one with compile_cache=off; None: engine compiles nothing)
    kept: bool  # False with compile_cache=off: the folder goes with the process
    facts: dict
    hits: int = 0
    misses: int = 0
    _start: tuple[int, int] = field(default=(0, 0), repr=False)

    @property
    def used(self) -> bool:
        """Whether anything was compiled or loaded through the cache (False for an engine that compiles nothing)."""
        return self.hits + self.misses > 0

    def measure(self, write_key: bool = True) -> None:
        """Record the hits and misses since the cache was opened (call once the engine is built). A kept folder
        that was used gets its key.json (`write_key`: one rank of a job writes it); it is for people to read,
        so a failure to write it is logged, never raised."""
        hits, misses = _counts()
        self.hits, self.misses = hits - self._start[0], misses - self._start[1]
        if self.directory is None:  # an engine that compiles nothing: no folder to describe
            return
        key = self.directory / "key.json"
        if write_key and self.used and self.kept and not key.exists():
            try:
                write_text(json.dumps(self.facts, indent=1, sort_keys=True, default=str) + "\n", key)
            except OSError as e:
                log.warning("compile cache: could not write %s (%s); the cache itself is unaffected", key, e)

    def columns(self) -> dict:
        """run.parquet's compile-cache columns: the folder only where it was used and is kept."""
        return {"compile_cache_dir": str(self.directory) if self.used and self.kept else None,
                "compile_cache_hits": self.hits, "compile_cache_misses": self.misses}


def _clear_inductor_caches() -> None:
    from torch._inductor.utils import clear_caches

    clear_caches()  # in-memory caches that remember the cache folder


def _check_usable(setting: str, root: Path) -> None:
    """CompileCacheError naming the value unless `root` is (or can be made) a writable folder whose file system
    grants file locks: inductor locks its entries (fcntl), and some network mounts refuse locks. Creates no
    folder (torch makes it when it first writes): the probe runs in `root` or its nearest existing parent."""
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise CompileCacheError(f"compile_cache={setting}: {probe} is not a writable folder; give one this job "
                                "can write (e.g. on the shared file system), or compile_cache=off")
    # a regular file, as inductor's locks are (a directory's lock is granted locally even where the mount
    # has no locks); named per process, and removed: this made it
    probe_file = probe / f".energybench-lock-probe-{socket.gethostname()}-{os.getpid()}"
    try:
        fd = os.open(probe_file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
            probe_file.unlink(missing_ok=True)
    except OSError as e:
        raise CompileCacheError(f"compile_cache={setting}: {probe} cannot be used ({e.strerror or e}; a mount "
                                "without file locks?); give a node-local folder, e.g. compile_cache=/tmp/eb-compile, "
                                "or compile_cache=off") from None


@contextlib.contextmanager
def use(setting: str, facts: dict, compiles: bool = True) -> Iterator[CacheUse]:
    """Point torch.compile's caches (TORCHINDUCTOR_CACHE_DIR, TRITON_CACHE_DIR) at the keyed folder of `facts`
    under `setting` for the block; `CacheUse.measure()` after the engine build counts its hits and misses.
    Torch makes the folder when it first writes to it. The environment is restored afterwards; with
    compile_cache=off the temporary folder this made is removed. A folder the user named that cannot be used
    is a CompileCacheError; with `auto` (a read-only or lock-less home on compute nodes) the point goes on
    with the cache off and a warning, since an engine that compiles nothing never needed it.
    compiles=False (an engine that compiles nothing here: `reference`, or any engine on CPU): nothing is set up
    or checked, and the CacheUse records no folder."""
    if not compiles:
        yield CacheUse(None, False, facts, _start=_counts())
        return
    root = root_for(setting)
    if root is not None:
        try:
            _check_usable(setting, root)
        except CompileCacheError as e:
            if setting.strip().lower() != "auto":
                raise
            log.warning("%s; compiling without a kept cache for this point", e)
            root = None
    if root is None:
        directory = Path(tempfile.mkdtemp(prefix="energybench-compile-"))
    else:
        directory = root / folder_name(facts)
    saved = {name: os.environ.get(name) for name in ENV_VARS}
    _clear_inductor_caches()  # before the switch: clearing may touch the folder it forgets
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(directory)
    os.environ["TRITON_CACHE_DIR"] = str(directory / "triton")
    cache = CacheUse(directory, root is not None, facts, _start=_counts())
    try:
        yield cache
    finally:
        _clear_inductor_caches()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if root is None:
            shutil.rmtree(directory, ignore_errors=True)
