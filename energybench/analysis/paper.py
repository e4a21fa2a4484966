"""The figures of Samsi et al., From Words to Watts (HPEC 2023), drawn from a user's own points frame.

Each takes the points frame of `energybench.results.points` and returns a matplotlib Figure. `x` and `hue`
default to the paper's choice; every other axis the sweep varied becomes a panel, so the functions work for
one axis, several, or a single point.
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd
from matplotlib.figure import Figure

from energybench.analysis.grid import plot_metric

PAPER_HUE = ("gpu_name", "dataset")


def tokens_per_s_by_model(points: pd.DataFrame, x: str = "model",
                          hue: Sequence[str] = PAPER_HUE) -> Figure:
    """Fig. 2: generated tokens per second by model, GPU and dataset."""
    return plot_metric(points, "tokens_per_s", x, hue, "Inference throughput (paper Fig. 2)")


def energy_per_second_by_model(points: pd.DataFrame, x: str = "model",
                               hue: Sequence[str] = PAPER_HUE) -> Figure:
    """Fig. 3: energy per second (J/s = average power of all the job's GPUs) by model, GPU and dataset."""
    return plot_metric(points, "power_w", x, hue, "Energy per second (paper Fig. 3)")


def power_by_shards_batch(points: pd.DataFrame, x: str = "shards", hue: Sequence[str] = ("batch",),
                          per_gpu: bool = False) -> Figure:
    """Figs. 4-5: energy per second against shards and batch size (per GPU with `per_gpu`)."""
    metric = "power_per_gpu_w" if per_gpu else "power_w"
    return plot_metric(points, metric, x, hue, "Energy per second vs shards and batch (paper Figs. 4-5)")


def energy_per_token_by_shards_tokens(points: pd.DataFrame, x: str = "shards",
                                      hue: Sequence[str] = ("max_tokens",)) -> Figure:
    """Figs. 6-7: energy per generated token against shards and maximum generation length."""
    return plot_metric(points, "energy_per_token_j", x, hue,
                       "Energy per token vs shards and max tokens (paper Figs. 6-7)")


def energy_per_response_by_shards_batch(points: pd.DataFrame, x: str = "shards",
                                        hue: Sequence[str] = ("batch",)) -> Figure:
    """Figs. 8-9: energy per response against shards and batch size."""
    return plot_metric(points, "energy_per_response_j", x, hue,
                       "Energy per response vs shards and batch (paper Figs. 8-9)")
