"""Crash-safe file writes: each file is written whole to a temporary name, then renamed into place."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path
from typing import Callable, Mapping

import pyarrow as pa
import pyarrow.parquet as pq


def write_atomic(path: Path, write: Callable[[Path], object], durable: bool = True) -> None:
    """Call `write(tmp)` on a temporary name beside `path`, then rename it to `path`: readers (and a killed
    writer) only ever leave the old file or the complete new one. durable: fsync before the rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # host, pid and a random part: writers on several nodes of a shared file system (or in per-job pid
    # namespaces) never share a temporary name
    tmp = path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        if durable:  # on disk before it replaces the old file, even if the node crashes
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_parquet(table: pa.Table, path: Path, durable: bool = True) -> None:
    """Write `table` to `path` so that readers (and a killed writer) only ever leave a complete file.
    durable=False skips the fsync: for rewrites inside a measured window, which a later durable write
    supersedes (an fsync on a shared file system can take long, and every rank waits for it)."""
    write_atomic(path, lambda tmp: pq.write_table(table, tmp), durable)


def write_text(text: str, path: Path) -> None:
    """Write `text` to `path` whole (durable) or not at all."""
    write_atomic(path, lambda tmp: tmp.write_text(text))


def cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """energybench's cache: $XDG_CACHE_HOME/energybench, by default ~/.cache/energybench."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "energybench"
