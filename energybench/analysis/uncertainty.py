"""Bootstrap over a point's measured batches: 95 % intervals of its metrics and of relative differences.

    import energybench.results as results
    from energybench.analysis.uncertainty import bootstrap_points, relative_difference

    batches = results.batches("results/my-sweep")
    ci = bootstrap_points(batches)                     # point_id, metric, value, lo, hi, n_batches
    relative_difference(batches, "<point a>", "<point b>", "energy_per_token_j")   # a / b - 1, lo, hi

A point's batches are resampled with replacement (as many as it measured) and each metric is recomputed from
the resample as the point computes it: a ratio of sums (J/token = sum of energy / sum of tokens) or a mean over
batches (TTFT, TPOT). Percentile interval. Seeded per point from (seed, point id), so a point's interval does
not depend on which other points are in the frame, and the same call gives the same numbers. A point with
fewer than two measured batches has no interval (lo, hi null): one batch says nothing about the spread.
Warm-up batches and rows of earlier attempts (a requeued point) are left out.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

LEVEL = 0.95


@dataclass(frozen=True)
class BatchMetric:
    numerator: str  # batches.parquet column summed (or averaged, without a denominator)
    denominator: str | None  # column summed below it; None: the mean of `numerator` over batches


# How a point's metric is made from its batches (energybench.results.metrics defines the same at point level).
BATCH_METRICS: dict[str, BatchMetric] = {
    "energy_per_token_j": BatchMetric("energy_j", "tokens"),
    "energy_per_response_j": BatchMetric("energy_j", "responses"),
    "tokens_per_s": BatchMetric("tokens", "duration_s"),
    "power_w": BatchMetric("energy_j", "duration_s"),
    "ttft_s": BatchMetric("ttft_s", None),
    "tpot_s": BatchMetric("tpot_s", None),
    "latency_s": BatchMetric("duration_s", None),
}
DEFAULT_METRICS = ("energy_per_token_j", "energy_per_response_j", "tokens_per_s", "ttft_s", "tpot_s", "latency_s")


def measured_batches(batches: pd.DataFrame) -> pd.DataFrame:
    """The measured (not warm-up) batches of each point's last attempt."""
    b = batches[~batches["warmup"].astype(bool)] if "warmup" in batches else batches
    if "attempt" in b and len(b):
        last = b.groupby("point_id", observed=True)["attempt"].transform("max")
        b = b[(b["attempt"] == last) | last.isna()]
    return b


def _rng(seed: int, point_id: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(str(point_id).encode())])


def _estimate(rows: pd.DataFrame, metric: BatchMetric, idx: np.ndarray | None) -> np.ndarray:
    """The metric over the batches (idx None) or over each resample (idx: [n, k] batch indices)."""
    num = pd.to_numeric(rows[metric.numerator], errors="coerce").to_numpy(float)
    if idx is None:
        idx = np.arange(len(num))[None, :]
    if metric.denominator is None:
        return num[idx].mean(axis=1)
    den = pd.to_numeric(rows[metric.denominator], errors="coerce").to_numpy(float)
    total = den[idx].sum(axis=1)
    return num[idx].sum(axis=1) / np.where(total == 0, np.nan, total)


def replicates(batches: pd.DataFrame, point_id: str, metric: str, n: int = 1000, seed: int = 0) -> np.ndarray:
    """`n` bootstrap values of `metric` for one point (empty if it has < 2 measured batches or the metric is
    not measured in every batch)."""
    spec = BATCH_METRICS[metric]
    rows = measured_batches(batches)
    rows = rows[rows["point_id"].astype(str) == str(point_id)]
    cols = [spec.numerator] + ([spec.denominator] if spec.denominator else [])
    if len(rows) < 2 or any(c not in rows or rows[c].isna().any() for c in cols):
        return np.empty(0)
    idx = _rng(seed, point_id).integers(0, len(rows), size=(n, len(rows)))
    return _estimate(rows, spec, idx)


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    if values.size == 0 or np.isnan(values).all():
        return np.nan, np.nan
    tail = 100 * (1 - level) / 2
    lo, hi = np.nanpercentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


def bootstrap_points(batches: pd.DataFrame, metrics: Sequence[str] = DEFAULT_METRICS, n: int = 1000,
                     seed: int = 0, level: float = LEVEL) -> pd.DataFrame:
    """One row per point and metric: `value` from all its measured batches, `lo`, `hi` the `level` percentile
    interval of `n` resamples of its batches, `n_batches`. Unknown metric names raise ValueError (the message
    lists BATCH_METRICS); a metric a point did not measure has a null value."""
    unknown = [m for m in metrics if m not in BATCH_METRICS]
    if unknown:
        raise ValueError(f"metric {unknown[0]!r} cannot be bootstrapped; choose from {', '.join(BATCH_METRICS)}")
    rows = []
    measured = measured_batches(batches)
    for point_id, part in measured.groupby(measured["point_id"].astype(str), sort=True):
        for m in metrics:
            spec = BATCH_METRICS[m]
            cols = [spec.numerator] + ([spec.denominator] if spec.denominator else [])
            have = all(c in part and part[c].notna().all() for c in cols)
            value = float(_estimate(part, spec, None)[0]) if have and len(part) else np.nan
            lo, hi = _interval(replicates(part, point_id, m, n, seed), level) if have else (np.nan, np.nan)
            rows.append({"point_id": point_id, "metric": m, "value": value, "lo": lo, "hi": hi,
                         "n_batches": len(part)})
    return pd.DataFrame(rows, columns=["point_id", "metric", "value", "lo", "hi", "n_batches"])


def relative_difference(batches: pd.DataFrame, a: str, b: str, metric: str, n: int = 1000, seed: int = 0,
                        level: float = LEVEL) -> tuple[float, float, float]:
    """(value, lo, hi) of metric(a) / metric(b) - 1 (e.g. -0.41: point a uses 41 % less), from all batches and
    from `n` resamples of each point's batches, drawn independently (different points share no batches).
    lo, hi are null where either point has fewer than two measured batches."""
    rows = measured_batches(batches)
    spec = BATCH_METRICS[metric]
    parts = [rows[rows["point_id"].astype(str) == str(p)] for p in (a, b)]
    for p, part in zip((a, b), parts):
        if part.empty:
            raise ValueError(f"no measured batches for point {p}")
    full = [float(_estimate(part, spec, None)[0]) for part in parts]
    value = full[0] / full[1] - 1
    ra, rb = replicates(batches, a, metric, n, seed), replicates(batches, b, metric, n, seed)
    if ra.size == 0 or rb.size == 0:
        return value, np.nan, np.nan
    return (value, *_interval(ra / rb - 1, level))
