"""Requests and steps of online points (requests.parquet, steps.parquet) of one or many sweeps."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from energybench.results.load import point_dirs
from energybench.results.tables import _files, _scan, _to_pandas

if TYPE_CHECKING:
    import pandas as pd


def requests(*paths: str | Path, points: Sequence[str] | None = None) -> "pd.DataFrame":
    """One row per request of every online point under `paths` (schema REQUESTS, plus `sweep`); empty if none."""
    return _read("requests.parquet", paths, points, ["sweep", "point_id", "request_index"])


def steps(*paths: str | Path, points: Sequence[str] | None = None) -> "pd.DataFrame":
    """One row per engine step of every online point under `paths` (schema STEPS, plus `sweep`); empty if none."""
    return _read("steps.parquet", paths, points, ["sweep", "point_id", "step_index", "started_at", "live"])


def _read(name: str, paths: tuple, points: Sequence[str] | None, empty: list[str]) -> "pd.DataFrame":
    import pandas as pd

    t = _scan(_files(point_dirs(*paths), name, points), None, None)
    return pd.DataFrame(columns=empty) if t is None else _to_pandas(t)
