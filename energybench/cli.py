"""`energybench <command> ...`: one entry point; each command is an existing module's `main`."""

from __future__ import annotations

import importlib
import sys
from typing import Callable

# command -> (module, function, one line of help); every module also runs as `python -m <module>`
COMMANDS: dict[str, tuple[str, str, str]] = {
    "sweep": ("energybench.sweep", "cli", "run a grid of points (Hydra overrides: key=value ..., -m)"),
    "point": ("energybench.point", "main", "run one point in this process (--config point=<id>/config.yaml)"),
    "report": ("energybench.report", "main", "write the report (tables, figures) of one or more sweeps"),
    "advise": ("energybench.advise", "main", "which configuration to run under constraints"),
    "power": ("energybench.power.__main__", "main", "GPU power limits: show, restore after a crash"),
    "lock": ("energybench.lock", "main", "show or break the lock of a sweep directory"),
    "slurm": ("energybench.slurm", "main", "point-dir <overrides>: a point's directory (for sbatch); job-env"),
    "sacct": ("energybench.energy.sacct", "main", "record Slurm's energy figure beside a point's"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {text}" for name, (_, _, text) in COMMANDS.items()]
    return ("usage: energybench <command> [args ...]\n\ncommands:\n" + "\n".join(lines)
            + "\n\n`energybench <command> --help` describes a command.")


def _entry(name: str) -> Callable[..., object]:
    module, function, _ = COMMANDS[name]
    return getattr(importlib.import_module(module), function)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"error: energybench {name}: unknown command; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    if name == "sweep":  # a Hydra app: it reads sys.argv itself
        sys.argv = [f"energybench {name}", *rest]
        _entry(name)()
        return 0
    code = _entry(name)(rest)
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
