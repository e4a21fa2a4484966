"""This node's name, as every per-node file (samples/node=<name>/, power-state/<name>.json) is keyed."""

from __future__ import annotations

import os
import socket
from typing import Mapping


def node_name(environ: Mapping[str, str] | None = None) -> str:
    """Slurm's name of this node (one per slurmd, so simulated nodes on one host differ), else the host's."""
    env = os.environ if environ is None else environ
    return env.get("SLURMD_NODENAME") or socket.gethostname()
