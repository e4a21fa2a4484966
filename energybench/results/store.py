"""Crash-safe files of a point: each is written whole to a temporary name, then renamed into place."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from energybench.results import owner

STATES = ("pending", "running", "done", "failed", "skipped")


def _atomic(path: Path, write, durable: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
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
    _atomic(path, lambda tmp: pq.write_table(table, tmp), durable)


def write_text(text: str, path: Path) -> None:
    _atomic(path, lambda tmp: tmp.write_text(text))


def write_status(point_dir: Path, state: str, reason: str | None = None, **extra: Any) -> dict:
    """status.json: the point's state for resume and reports (pending|running|done|failed|skipped).

    `running` also records its `owner` (this process: host, pid and start time, Slurm job), so readers can
    tell a point still being run from one whose process died (energybench.results.status)."""
    assert state in STATES, state
    if state == "running":
        extra = {"owner": owner.this_process(), **extra}
    previous = read_status(point_dir) or {}
    status = {
        "state": state,
        "reason": reason,
        "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "attempt": previous.get("attempt", 0) + (1 if state == "running" else 0),
        **{k: v for k, v in previous.items() if k not in ("state", "reason", "updated_at", "attempt")},
        **extra,
    }
    write_text(json.dumps(status, indent=1) + "\n", point_dir / "status.json")
    return status


def read_status(point_dir: Path) -> dict | None:
    try:
        return json.loads((point_dir / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
