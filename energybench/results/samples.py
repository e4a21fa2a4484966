"""Read a point's sampler timeline back: every node's parts, `node` taken from the hive directory."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds

from energybench.results.schema import SAMPLES


def read_samples(point_dir: str | Path) -> pa.Table:
    """samples/node=<host>/part-*.parquet of one point as one table of schema SAMPLES (empty if none).

    Hidden temporaries (a part being written when the job was killed) are skipped, as pyarrow skips
    names starting with '.'.
    """
    root = Path(point_dir) / "samples"
    if not root.is_dir():
        return SAMPLES.empty_table()
    node = ds.partitioning(pa.schema([("node", pa.string())]), flavor="hive")
    table = ds.dataset(root, format="parquet", partitioning=node).to_table()
    return table.select(SAMPLES.names).cast(SAMPLES)
