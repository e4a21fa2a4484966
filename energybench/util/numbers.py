"""Arithmetic on measured values that may be missing: a None input gives None, never 0."""

from __future__ import annotations

from statistics import fmean
from typing import Iterable


def ratio(num: float | None, den: float | None) -> float | None:
    """num / den; None when either is missing or den is 0."""
    if num is None or den is None or den == 0:
        return None
    return num / den


def sum_or_none(values: Iterable[float | None]) -> float | None:
    """Sum, or None if any part was not measured."""
    total = 0.0
    for v in values:
        if v is None:
            return None
        total += v
    return total


def mean_or_none(values: Iterable[float | None]) -> float | None:
    """Mean of the values present; None when none is."""
    present = [v for v in values if v is not None]
    return fmean(present) if present else None
