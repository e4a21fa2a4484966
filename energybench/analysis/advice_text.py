"""The advice in words and tables: a configuration described by its knobs, the savings sentence, the
recommendation table and the front table (energybench.analysis.advise computes what they say)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from energybench.analysis.grid import value_label

if TYPE_CHECKING:
    from energybench.analysis.advise import Advice

LABEL = {"tpot_s": "TPOT", "ttft_s": "TTFT", "latency_s": "time per response", "tokens_per_s": "tokens/s",
         "gpus": "GPUs", "energy_per_token_j": "energy per token", "energy_per_response_j": "energy per response"}
UNIT = {"tpot_s": " s", "ttft_s": " s", "latency_s": " s", "energy_per_token_j": " J",
        "energy_per_response_j": " J"}


def describe(row: pd.Series, d: pd.DataFrame) -> str:
    """A point in words by its knobs: "batch 128 at shards 1" (+ cap, engine where they vary)."""
    text = f"batch {row['batch']} at shards {row['shards']}"
    if d["power_cap_w"].nunique(dropna=False) > 1 or not pd.isna(row["power_cap_w"]):
        text += f", {value_label('power_cap_w', row['power_cap_w'])} cap"
    if d["engine"].nunique(dropna=False) > 1:
        text += f", {row['engine']} engine"
    return text


def pct(x: float) -> str:
    return f"{100 * x:+.0f} %" if np.isfinite(x) else "n/a"


def _interval_words(lo: float, hi: float, less: bool) -> str:
    """The interval of the change in the sentence's own direction ("41 % less (95 %: 35 to 47 %)")."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return " (no interval: a point has fewer than two measured batches)"
    a, b = (-100 * hi, -100 * lo) if less else (100 * lo, 100 * hi)
    return f" (95 % interval {a:.0f} to {b:.0f} %)"


def sentence(a: Advice, d: pd.DataFrame) -> str:
    """The recommendation and its savings in plain words."""
    if a.recommended is None:
        return ""
    what = LABEL[a.energy_metric]
    rec = describe(a.recommended, d)
    parts = []
    for against, ref in (("the paper's default", a.default), ("the fastest point", a.fastest)):
        if ref is None:
            continue
        if ref["point_id"] == a.recommended["point_id"]:
            parts.append(f"{rec} is {against}")
            continue
        s = a.savings[(a.savings["point_id"] == ref["point_id"]) & (a.savings["against"] == against)]
        e, t = s[s["metric"] == a.energy_metric], s[s["metric"] == "tpot_s"]
        if e.empty:
            continue
        e = e.iloc[0]
        more_less = "less" if e["change"] <= 0 else "more"
        text = (f"{rec} uses {abs(100 * e['change']):.0f} % {more_less} {what} than {against} "
                f"({describe(ref, d)})" + _interval_words(e["lo"], e["hi"], e["change"] <= 0))
        if not t.empty:
            text += f", at {pct(t.iloc[0]['change'])} TPOT"
        parts.append(text)
    if not parts:
        return f"Recommended: {rec}."
    return ", and ".join([parts[0]] + [p.removeprefix(rec + " ") for p in parts[1:]]) + "."


