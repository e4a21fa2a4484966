"""A point's status.json; the crash-safe writers (energybench.util.files) re-exported for results' callers."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from energybench.results import owner
from energybench.util.files import write_parquet, write_text  # noqa: F401 (re-exported)

STATES = ("pending", "running", "done", "failed", "skipped")


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
