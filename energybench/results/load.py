"""Read sweeps back: one pandas row per point, done or not, with its status, reason and derived metrics."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import yaml

from energybench.config import ConfigError, ModelConfig, PointConfig, from_mapping
from energybench.results.columns import config_columns
from energybench.results.schema import RUN, table
from energybench.results.store import read_status

if TYPE_CHECKING:
    import pandas as pd

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def point_dirs(*paths: str | Path) -> list[Path]:
    """Every point directory under the given out_dir, sweep or point directories (each once, in order)."""
    found: dict[Path, None] = {}
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: no such results directory; pass <out_dir>, <out_dir>/<sweep> "
                                    "or a point=<id> directory")
        if path.name.startswith("point="):
            found[path.resolve()] = None
        else:
            for p in sorted(path.glob("**/point=*")):
                if p.is_dir():
                    found[p.resolve()] = None
    return list(found)


@functools.lru_cache(maxsize=8192)
def _parse_block(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def _parse_config(text: str) -> dict:
    """config.yaml as a dict, parsed one top-level key at a time with a cache: the points of a sweep share
    most blocks (model, dataset, meter, cluster), so a sweep of 10^4 points parses only its distinct blocks."""
    blocks: list[str] = []
    for line in text.splitlines(keepends=True):
        if blocks and (line[:1] in (" ", "\t", "-", "#", "\n") or not line.strip()):
            blocks[-1] += line
        else:
            blocks.append(line)
    out: dict = {}
    for block in blocks:
        parsed = _parse_block(block)
        if isinstance(parsed, dict):
            out.update(parsed)
    return out


def _read_config(point_dir: Path) -> dict | None:
    try:
        return _parse_config((point_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None


def _model_shape(raw: dict) -> dict[str, Any]:
    model = raw.get("model")
    if not isinstance(model, dict):
        return {}
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    try:
        m = ModelConfig(**{k: v for k, v in model.items() if k in names})
        return {"model_dim": m.dim, "model_layers": m.n_layers, "model_heads": m.n_heads,
                "model_ffn_dim": m.hidden_dim, "model_vocab": m.vocab_size}
    except (TypeError, ValueError, ZeroDivisionError):
        return {}


def _settings(raw: dict) -> dict[str, Any]:
    meter, cluster = raw.get("meter") or {}, raw.get("cluster") or {}
    samples, batch = raw.get("samples"), raw.get("batch")
    expected = -(-samples // batch) if isinstance(samples, int) and isinstance(batch, int) and batch > 0 else None
    carbon, cost = raw.get("carbon") or {}, raw.get("cost") or {}  # absent from results older than these keys
    return {"gpu_type": cluster.get("gpu_type"), "warmup_batches": raw.get("warmup_batches"),
            "sample_hz": meter.get("sample_hz"), "idle_s": meter.get("idle_s"), "batches_expected": expected,
            "carbon_intensity_g_per_kwh": carbon.get("intensity_g_per_kwh"), "pue": carbon.get("pue"),
            "usd_per_kwh": cost.get("usd_per_kwh")}


def _extras(point_dir: Path, has_run: bool) -> dict[str, Any]:
    """Status, model shape and settings of one point, from status.json and config.yaml."""
    status = read_status(point_dir) or {}
    raw = _read_config(point_dir)
    row: dict[str, Any] = {
        "point_dir": str(point_dir), "sweep_dir": str(point_dir.parent),
        "_id": point_dir.name.removeprefix("point="),
        "status": status.get("state") or ("done" if has_run else "unknown"),
        "reason": status.get("reason") if status else (None if has_run else "no status.json"),
        "status_attempt": status.get("attempt"), "updated_at": status.get("updated_at"),
    }
    if raw is not None:
        row.update(_model_shape(raw), **_settings(raw))
    if not has_run:
        row.update(_config_columns(raw, row))
        if (point_dir / "batches.parquet").is_file():
            try:
                row["batches_done"] = _batches_done(point_dir / "batches.parquet", status.get("attempt"))
            except (OSError, pa.ArrowException):
                pass
    return row


def _batches_done(path: Path, attempt: int | None) -> int:
    """Measured batches the point's current attempt finished (status.json's; else the latest in the file): a
    requeued point's file also holds the rows of its earlier attempts."""
    rows = pq.read_table(path, columns=["warmup", "attempt"]).to_pylist()
    if attempt is None:
        attempt = max((r["attempt"] for r in rows if r["attempt"] is not None), default=None)
    return sum(1 for r in rows if not r["warmup"] and r["attempt"] == attempt)


def _config_columns(raw: dict | None, row: dict) -> dict[str, Any]:
    """The run.parquet configuration columns of a point that has no run.parquet."""
    if raw is None:
        return {"reason": row["reason"] or "config.yaml missing or unreadable"}
    try:
        return config_columns(from_mapping(PointConfig, raw))
    except (ConfigError, TypeError) as e:
        return {"reason": row["reason"] or f"config.yaml does not load: {e}"}


def _runs(files: list[Path]) -> pa.Table:
    """Every run.parquet in one scan; columns unified over all files (newer writers may add columns)."""
    if not files:
        return table([], RUN).append_column("point_dir", pa.array([], pa.string()))
    factory = ds.FileSystemDatasetFactory(pafs.LocalFileSystem(), [str(f) for f in files], ds.ParquetFileFormat())
    dataset = factory.finish(factory.inspect(promote_options="permissive"))
    parts, dirs = [], []
    for tagged in dataset.scanner().scan_batches():  # each batch tagged with the file it came from
        parts.append(tagged.record_batch)
        dirs.extend([str(Path(tagged.fragment.path).parent)] * tagged.record_batch.num_rows)
    runs = pa.Table.from_batches(parts, dataset.schema)
    if runs.num_rows != len(files):
        raise ValueError(f"run.parquet files hold {runs.num_rows} rows for {len(files)} points; expected one each")
    return runs.append_column("point_dir", pa.array(dirs, pa.string()))


def points(*paths: str | Path, derive: bool = True) -> "pd.DataFrame":
    """One row per point under `paths` (out_dirs, sweep or point directories), done or not.

    Done points carry their run.parquet row; pending, running, failed or killed points carry their
    configuration, `status` and `reason` (and `batches_done` where batches.parquet exists). With `derive`,
    the derived metrics of `energybench.results.metrics.derive_points` are added. Raises FileNotFoundError
    for a path that does not exist.
    """
    import pandas as pd

    from energybench.results.metrics import derive_points

    dirs = point_dirs(*paths)
    run_files = [d / "run.parquet" for d in dirs if (d / "run.parquet").is_file()]
    has_run = {f.parent for f in run_files}
    extras = [_extras(d, d in has_run) for d in dirs]
    runs = _runs(run_files).to_pandas().drop(columns=["status", "reason"])
    with_run = pd.DataFrame([e for e in extras if Path(e["point_dir"]) in has_run] or
                            {"point_dir": pd.Series([], dtype=runs["point_dir"].dtype)})
    rest = pd.DataFrame([e for e in extras if Path(e["point_dir"]) not in has_run])
    frame = runs.merge(with_run[[c for c in with_run.columns if c not in runs.columns or c == "point_dir"]],
                       on="point_dir", how="left")
    if len(rest):
        frame = pd.concat([frame, rest], ignore_index=True) if len(frame) else rest
        frame["point_id"] = frame["point_id"].fillna(frame["_id"]) if "point_id" in frame else frame["_id"]
    for name in ("status", "reason"):
        if name not in frame:
            frame[name] = pd.Series(dtype=object)
    if "batches" in frame:  # a done point finished all its batches
        frame["batches_done"] = frame["batches_done"].fillna(frame["batches"]) if "batches_done" in frame \
            else frame["batches"]
    frame = _integers(frame.drop(columns=["_id"], errors="ignore"))
    order = [c for c in RUN.names if c in frame.columns]
    frame = frame[order + [c for c in frame.columns if c not in order]].reset_index(drop=True)
    return derive_points(frame) if derive else frame


def _integers(frame: "pd.DataFrame") -> "pd.DataFrame":
    """Integer columns stay integers: int64, or pandas' nullable Int64 where a point lacks the value."""
    for name in [f.name for f in RUN if pa.types.is_integer(f.type)] + ["batches_done", "batches_expected"]:
        if name in frame and frame[name].dtype.kind == "f":
            values = frame[name]
            if values.notna().all():
                frame[name] = values.astype("int64")
            elif (values.dropna() % 1 == 0).all():
                frame[name] = values.astype("Int64")
    return frame


def load(*paths: str | Path):
    """One pandas row per point under `paths` (same as `points`)."""
    return points(*paths)
