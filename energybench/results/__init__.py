"""Results: Parquet schemas, crash-safe writers, metric definitions and readers."""

from energybench.device.cards import card_for, cards_table
from energybench.results.load import load, point_dirs, points
from energybench.results.status import BrokenFileError, BrokenFileWarning
from energybench.results.tables import batches, gpu_samples, gpus

__all__ = ["BrokenFileError", "BrokenFileWarning", "batches", "card_for", "cards_table", "gpus", "gpu_samples", "load",
           "point_dirs", "points"]
