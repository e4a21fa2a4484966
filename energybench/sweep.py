"""`python -m energybench.sweep [-m] key=value ...`: the Hydra entry point; every point runs through here.

The energybench sweeper (hydra_plugins/energybench_plugins) expands the grid, validates and
pre-flights every point, skips finished ones and prints the summary; the launcher chosen by
`cluster` runs the points (energybench.dispatch): the Slurm launcher calls `main` once per point
inside its job, the local launcher runs each planned point in Hydra's job context.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from energybench.config import ConfigError
from energybench.confload import check_group_choices, conf_dir, to_point_config
from energybench.results.layout import Point
from energybench.results.status import PointOutcome
from energybench.provenance import remember_command


@hydra.main(version_base=None, config_path=str(conf_dir()), config_name="config")
def main(dcfg: DictConfig) -> PointOutcome:
    """The task function: runs the one point `dcfg` defines (on this rank of a Slurm job, or here)."""
    point = Point.of(to_point_config(dcfg))
    if point.cfg.cluster.launcher == "slurm":
        from energybench.distributed import DistEnv
        from energybench.point import run_point

        return run_point(point, DistEnv.from_environ())
    from energybench.dispatch.local import run_local, stop_if_interrupted

    return stop_if_interrupted(run_local(point))  # under Hydra's basic launcher (hydra/launcher=basic)


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
