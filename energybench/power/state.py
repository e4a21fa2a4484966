"""The restore-state file: the limits found on a node's GPUs, written before any limit is changed."""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from energybench.util.files import write_text


@dataclass(frozen=True)
class SavedLimit:
    uuid: str  # NVML UUID, 'GPU-...'
    index: int  # NVML index at the time (for messages and the command backend's {index})
    limit_w: float  # power management limit found before the point changed it


@dataclass(frozen=True)
class PowerState:
    """What `python -m energybench.power restore` needs to put a node's limits back, with no config."""

    host: str
    pid: int
    created_at: str
    backend: str  # nvml | command
    command: tuple[str, ...] | None  # the command template, for backend=command
    gpus: tuple[SavedLimit, ...]

    @classmethod
    def new(cls, host: str, backend: str, command: tuple[str, ...] | None, gpus: list[SavedLimit]) -> PowerState:
        """A state file for node `host`, named as the restore command names this node (energybench.nodes)."""
        now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return cls(host, os.getpid(), now, backend, command, tuple(gpus))


def state_path(directory: Path, host: str) -> Path:
    """<state_dir>/<host>.json: one file per node, so nodes sharing a file system never collide."""
    return directory / f"{host}.json"


def write_state(state: PowerState, path: Path) -> None:
    """Write whole and rename into place (durable before the first limit changes)."""
    data = {**asdict(state), "command": list(state.command) if state.command else None}
    write_text(json.dumps(data, indent=1) + "\n", path)


def read_state(path: Path) -> PowerState:
    """Parse a state file; ValueError naming the file when it is not one."""
    try:
        data = json.loads(path.read_text())
        gpus = tuple(SavedLimit(g["uuid"], int(g["index"]), float(g["limit_w"])) for g in data["gpus"])
        command = tuple(data["command"]) if data.get("command") else None
        return PowerState(data["host"], int(data["pid"]), data["created_at"], data["backend"], command, gpus)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not an energybench power-state file ({type(e).__name__}: {e})") from None
