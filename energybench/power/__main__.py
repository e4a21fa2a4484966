"""`python -m energybench.power restore <state file or directory>...`: put back the limits a killed point left.

For an sbatch exit trap or epilog, or an admin after a SIGKILL. A path that does not exist means there
is nothing to restore (exit 0); a state file of another host is refused. Exit 1 if any limit stays changed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from energybench.nodes import node_name
from energybench.device.nvml import Nvml, NvmlUnavailable
from energybench.power.backends import LimitError
from energybench.power.cap import restore_saved
from energybench.power.state import PowerState, read_state


def state_files(path: Path, host: str) -> list[Path]:
    """The state files `path` names: itself, or this host's file in a directory."""
    if path.is_dir():
        return sorted(path.glob(f"{host}.json"))
    return [path] if path.exists() else []


def restore_file(path: Path, host: str) -> list[str]:
    """Restore one state file's limits on this host; returns failures (empty: done, file removed)."""
    state: PowerState = read_state(path)
    if state.host != host:
        return [f"{path} is for host {state.host}, this is {host}: run the restore there"]
    nvml = Nvml()
    try:
        failures = [f"{path}: {f}" for f in restore_saved(state, nvml, {})]
    finally:
        nvml.close()
    if not failures:
        path.unlink(missing_ok=True)
    return failures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m energybench.power", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="verb", required=True)
    rp = sub.add_parser("restore", help="restore power limits from state files (or this host's file in a directory)")
    rp.add_argument("paths", nargs="+", type=Path)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    host, failed = node_name(), False
    for raw in args.paths:
        files = state_files(raw, host)
        if not files:
            print(f"nothing to restore: no state file at {raw} for {host}")
        for path in files:
            try:
                failures = restore_file(path, host)
            except (ValueError, NvmlUnavailable, LimitError) as e:
                failures = [str(e)]
            for f in failures:
                print(f"error: {f}", file=sys.stderr)
            if failures:
                failed = True
            else:
                print(f"restored the power limits of {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
