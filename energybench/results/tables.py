"""Batches, per-GPU samples and per-GPU totals of one or many sweeps, read through pyarrow.dataset.

Each sweep directory is one hive-partitioned dataset (`point=<id>/...`, and `node=<host>/` for samples), so a
filter on points or nodes opens only their files. Repeated strings (point ids, hosts, GPU UUIDs, windows)
come back as pandas categoricals, which keeps 10^6 sample rows to a few seconds and little memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from energybench.results.load import point_dirs
from energybench.results.status import check_on_error, drop_broken
from energybench.results.store import read_status

if TYPE_CHECKING:
    import pandas as pd

BATCHES_FILE = "batches.parquet"
GPUS_FILE = "gpus.parquet"
SAMPLES_GLOB = "samples/node=*/part-*.parquet"
CATEGORICAL = ("sweep", "point_id", "node", "gpu_uuid", "gpu_name", "window")
# Strings that repeat on every row are read as dictionaries (pandas categoricals): less memory, faster.
_FORMAT = ds.ParquetFileFormat(read_options=ds.ParquetReadOptions(dictionary_columns=list(CATEGORICAL)))
CONFIG_AXES = ("sweep", "point_id", "status", "model", "dataset", "gpu_name", "batch", "max_tokens", "shards",
               "power_cap_w", "engine", "length", "seed")


def _files(dirs: Iterable[Path], pattern: str, points: Sequence[str] | None) -> dict[Path, list[Path]]:
    """Files matching `pattern` in each point directory, grouped by sweep directory."""
    wanted = None if points is None else set(points)
    grouped: dict[Path, list[Path]] = {}
    for d in dirs:
        if wanted is not None and d.name.removeprefix("point=") not in wanted:
            continue
        found = sorted(d.glob(pattern)) if "*" in pattern else [d / pattern] if (d / pattern).is_file() else []
        if found:
            grouped.setdefault(d.parent, []).extend(found)
    return grouped


def _schema(files: list[Path], options: ds.FileSystemFactoryOptions) -> pa.Schema:
    """Columns unified over the first and last file of each directory: one writer (a node's sampler during
    one attempt) writes one schema, so reading every footer of thousands of parts would add nothing."""
    by_dir: dict[Path, list[Path]] = {}
    for f in files:
        by_dir.setdefault(f.parent, []).append(f)
    picked = sorted({str(f) for fs in by_dir.values() for f in (fs[0], fs[-1])})
    factory = ds.FileSystemDatasetFactory(pafs.LocalFileSystem(), picked, _FORMAT, options)
    return factory.inspect(promote_options="permissive")


def current_attempts(point_dirs: Iterable[Path]) -> dict[str, int]:
    """point id -> the attempt its status.json names (the one running now, or the one that finished)."""
    out = {}
    for d in point_dirs:
        attempt = (read_status(d) or {}).get("attempt")
        if isinstance(attempt, int) and attempt > 0:
            out[d.name.removeprefix("point=")] = attempt
    return out


def _current_only(attempts: dict[str, int]) -> ds.Expression | None:
    """Rows of each point's current attempt (points without a status.json keep every row)."""
    by_attempt: dict[int, list[str]] = {}
    for pid, attempt in attempts.items():
        by_attempt.setdefault(attempt, []).append(pid)
    if not by_attempt:
        return None
    expr = ~ds.field("point").isin(list(attempts))
    for attempt, pids in by_attempt.items():
        expr = expr | ((ds.field("attempt") == attempt) & ds.field("point").isin(pids))
    return expr


def _scan(grouped: dict[Path, list[Path]], columns: Sequence[str] | None, filter: ds.Expression | None,
          current: bool = False, on_error: str = "warn") -> pa.Table | None:
    """One table over every sweep's files; `sweep` (the sweep directory's name) and `point_id` always present.
    `current`: only each point's current attempt. A file that does not read back is skipped with a warning
    naming it, or raises (`on_error`, energybench.results.status.drop_broken)."""
    check_on_error(on_error)
    tables = []
    for sweep_dir, files in grouped.items():
        where = filter
        if current:
            attempts = current_attempts({sweep_dir / f.relative_to(sweep_dir).parts[0] for f in files})
            keep_current = _current_only(attempts)
            if keep_current is not None:
                where = keep_current if where is None else where & keep_current
        try:
            t = _scan_sweep(sweep_dir, files, columns, where)
        except (OSError, pa.ArrowException):
            files, _ = drop_broken(files, on_error)
            if not files:
                continue
            t = _scan_sweep(sweep_dir, files, columns, where)
        tables.append(t)
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="permissive")


def _scan_sweep(sweep_dir: Path, files: list[Path], columns: Sequence[str] | None,
                filter: ds.Expression | None) -> pa.Table:
    options = ds.FileSystemFactoryOptions(partition_base_dir=str(sweep_dir),
                                          partitioning=ds.HivePartitioning.discover(infer_dictionary=True))
    factory = ds.FileSystemDatasetFactory(pafs.LocalFileSystem(), [str(f) for f in files], _FORMAT, options)
    dataset = factory.finish(_schema(files, options))
    names = dataset.schema.names
    keep = [c for c in (columns or names) if c in names]
    keep += [k for k in ("point", "point_id") if k in names and k not in keep]
    t = dataset.to_table(columns=keep, filter=filter)
    if "point_id" in t.column_names:
        t = t.drop_columns(["point"])
    else:
        t = t.rename_columns(["point_id" if c == "point" else c for c in t.column_names])
    sweep = pa.DictionaryArray.from_arrays(pa.array([0] * t.num_rows, pa.int32()), pa.array([sweep_dir.name]))
    return t.append_column("sweep", sweep)


def _to_pandas(t: pa.Table) -> "pd.DataFrame":
    for name in CATEGORICAL:
        if name in t.column_names and not pa.types.is_dictionary(t.schema.field(name).type):
            t = t.set_column(t.schema.get_field_index(name), name, pc.dictionary_encode(t.column(name)))
    return t.to_pandas()


def batches(*paths: str | Path, points: Sequence[str] | None = None, measured_only: bool = False,
            with_config: bool = True, all_attempts: bool = False, on_error: str = "warn") -> "pd.DataFrame":
    """One row per batch (warm-up rows flagged by `warmup`) of every point under `paths`.

    Only each point's current attempt (the one its status.json names: running now, or finished) unless
    `all_attempts`: a requeued or re-run point's file keeps its earlier attempts' rows, tagged by `attempt`.
    `with_config` joins the point's axes (model, dataset, batch, ...) and status, so rows slice directly.
    Partial points contribute the batches they finished. An empty frame where no point has batches. A file
    that does not read back: a BrokenFileWarning naming it and skipped (on_error="warn", the default), or
    BrokenFileError (on_error="raise").
    """
    import pandas as pd

    from energybench.results.load import points as load_points

    grouped = _files(point_dirs(*paths), BATCHES_FILE, points)
    t = _scan(grouped, None, None, current=not all_attempts, on_error=on_error)
    if t is None:
        return pd.DataFrame(columns=["sweep", "point_id", "batch_index", "warmup"])
    if measured_only:
        t = t.filter(pc.invert(t.column("warmup")))
    frame = _to_pandas(t)
    if with_config:
        info = load_points(*[f.parent for files in grouped.values() for f in files], derive=False,  # those read
                           on_error=on_error)
        info = info[[c for c in CONFIG_AXES if c in info.columns]].assign(  # rows name their sweep by directory,
            sweep=[Path(d).name for d in info["sweep_dir"]])                # as here (copied or renamed sweeps)
        frame["sweep"], frame["point_id"] = frame["sweep"].astype(str), frame["point_id"].astype(str)
        frame = frame.merge(info, on=["sweep", "point_id"], how="left", suffixes=("", "_point"))
    return frame


def gpu_samples(*paths: str | Path, points: Sequence[str] | None = None, nodes: Sequence[str] | None = None,
            windows: Sequence[str] | None = None, columns: Sequence[str] | None = None,
            elapsed: bool = True, all_attempts: bool = False, on_error: str = "warn") -> "pd.DataFrame":
    """Per-GPU sampler rows (one per GPU per tick, every node) of the points under `paths`: each point's
    current attempt only, unless `all_attempts` (see `batches`; `on_error` as there).

    Filters are pushed down to the files: `points` (point ids), `nodes` (hosts), `windows` (exact window
    names such as "idle" or "batch3/decode"); `columns` reads only those columns. With `elapsed`, adds
    `elapsed_s`, seconds since the point's first sample on any node. An empty frame where no point has samples.
    """
    import pandas as pd

    filters = [f for f in (None if nodes is None else ds.field("node").isin(list(nodes)),
                           None if windows is None else ds.field("window").isin(list(windows))) if f is not None]
    expr = None
    for f in filters:
        expr = f if expr is None else expr & f
    cols = None if columns is None else list(dict.fromkeys([*columns, "node", *(["timestamp"] if elapsed else [])]))
    t = _scan(_files(point_dirs(*paths), SAMPLES_GLOB, points), cols, expr, current=not all_attempts,
              on_error=on_error)
    if t is None:
        return pd.DataFrame(columns=["sweep", "point_id", "node", "timestamp", "gpu_uuid", "power_w", "window"])
    frame = _to_pandas(t)
    if elapsed and len(frame):
        start = frame.groupby(["sweep", "point_id"], observed=True)["timestamp"].transform("min")
        frame["elapsed_s"] = (frame["timestamp"] - start).dt.total_seconds()
    return frame


def gpus(*paths: str | Path, points: Sequence[str] | None = None, on_error: str = "warn") -> "pd.DataFrame":
    """One row per GPU per point (every node): that GPU's energy, idle power, power, utilization, limits
    (`on_error` as in `batches`)."""
    import pandas as pd

    t = _scan(_files(point_dirs(*paths), GPUS_FILE, points), None, None, on_error=on_error)
    if t is None:
        return pd.DataFrame(columns=["sweep", "point_id", "node", "gpu_uuid", "energy_j"])
    return _to_pandas(t)
