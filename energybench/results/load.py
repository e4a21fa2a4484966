"""Read sweeps back: one pandas row per point, done or not."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from energybench.config import ConfigError, PointConfig, from_mapping
from energybench.results.columns import config_columns
from energybench.results.schema import RUN, table
from energybench.results.store import read_status


def point_dirs(*paths: str | Path) -> list[Path]:
    """Every point directory under the given out_dir, sweep or point directories."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such results directory")
        if path.name.startswith("point="):
            found.append(path)
        else:
            found.extend(sorted(p for p in path.glob("**/point=*") if p.is_dir()))
    return found


def point_row(point_dir: Path) -> pa.Table | None:
    """run.parquet of a finished point; otherwise its configuration with status and reason."""
    if (point_dir / "run.parquet").is_file():
        return pq.read_table(point_dir / "run.parquet")
    status = read_status(point_dir)
    if status is None or not (point_dir / "config.yaml").is_file():
        return None
    try:
        cfg = from_mapping(PointConfig, yaml.safe_load((point_dir / "config.yaml").read_text()))
    except ConfigError:
        return None
    row = {**config_columns(cfg), "status": status["state"], "reason": status.get("reason")}
    return table([row], RUN)


def load(*paths: str | Path):
    """One pandas row per point under `paths` (sweep directories or out_dirs), with `status` and `reason`."""
    tables = [t for t in (point_row(d) for d in point_dirs(*paths)) if t is not None]
    if not tables:
        return table([], RUN).to_pandas()
    return pa.concat_tables(tables, promote_options="default").to_pandas()
