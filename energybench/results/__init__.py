"""Results: Parquet schemas, crash-safe writers, metric definitions and readers."""

from energybench.results.load import load, point_dirs

__all__ = ["load", "point_dirs"]
