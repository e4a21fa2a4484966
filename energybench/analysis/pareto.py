"""Pareto fronts of measured points: which configurations no other measured point beats on every objective."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd


def pareto_mask(frame: pd.DataFrame, minimize: Sequence[str] = (), maximize: Sequence[str] = ()) -> pd.Series:
    """True for the rows no other row dominates: at least as good on every objective and better on one.

    Measured rows only, no interpolation. Rows equal on every objective do not dominate each other, so ties
    are all on the front. A row with a null objective is not compared (False), never counted as good.
    """
    cols = [*minimize, *maximize]
    if not cols:
        raise ValueError("pareto_mask needs at least one objective (minimize=[...] or maximize=[...])")
    missing = [c for c in cols if c not in frame]
    if missing:
        raise ValueError(f"{missing[0]!r} is not a column of the frame")
    # every objective as "smaller is better"
    values = np.column_stack([pd.to_numeric(frame[c], errors="coerce").to_numpy(float) * (1 if c in minimize else -1)
                              for c in cols])
    valid = ~np.isnan(values).any(axis=1)
    v = values[valid]
    # dominated[i]: some j with v[j] <= v[i] everywhere and < somewhere
    le = (v[:, None, :] <= v[None, :, :]).all(axis=2)  # le[j, i]: j at least as good as i
    lt = (v[:, None, :] < v[None, :, :]).any(axis=2)
    dominated = (le & lt).any(axis=0)
    mask = np.zeros(len(frame), dtype=bool)
    mask[np.flatnonzero(valid)[~dominated]] = True
    return pd.Series(mask, index=frame.index, name="on_front")
