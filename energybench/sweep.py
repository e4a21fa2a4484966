"""`python -m energybench.sweep [-m] key=value ...`: the Hydra entry point; every point runs through here.

The energybench sweeper (hydra_plugins/energybench_plugins) expands the grid, validates and
pre-flights every point, skips finished ones and prints the summary; the launcher chosen by
`cluster` then calls `main` once per point (in this process, or inside a Slurm job).
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from energybench.config import ConfigError
from energybench.confload import check_group_choices, conf_dir, to_point_config
from energybench.point import PointOutcome
from energybench.provenance import remember_command


@hydra.main(version_base=None, config_path=str(conf_dir()), config_name="config")
def main(dcfg: DictConfig) -> PointOutcome:
    cfg = to_point_config(dcfg)
    if cfg.cluster.launcher == "slurm":
        from energybench.distributed import DistEnv
        from energybench.point import run_point

        return run_point(cfg, DistEnv.from_environ())
    from energybench.launch import run_local

    return _stop_if_interrupted(run_local(cfg))


def _stop_if_interrupted(outcome: PointOutcome) -> PointOutcome:
    """Ctrl-C or SIGTERM stopped the point in this process: stop the sweep too rather than start the next point
    (the point is recorded as failed, the others stay pending; the same command resumes)."""
    if outcome.interrupted:
        print(f"error: {outcome.point_id}: {outcome.reason}; the sweep stops here (run the same command again to "
              "resume it)", file=sys.stderr)
        sys.exit(130 if "SIGINT" in (outcome.reason or "") else 143)
    return outcome


def cli() -> None:
    prog = "python -m energybench.sweep" if sys.argv[0].endswith(".py") else Path(sys.argv[0]).name
    remember_command(sys.argv[1:], prog)
    try:
        check_group_choices([a for a in sys.argv[1:] if not a.startswith("-")])
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    main()


if __name__ == "__main__":
    cli()
