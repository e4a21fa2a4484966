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
    same = a.default is not None and a.fastest is not None and a.default["point_id"] == a.fastest["point_id"]
    refs = [("the paper's default" + (", also the fastest point," if same else ""), "the paper's default", a.default)]
    refs += [] if same else [("the fastest point", "the fastest point", a.fastest)]
    for words, against, ref in refs:
        if ref is None:
            continue
        if ref["point_id"] == a.recommended["point_id"]:
            parts.append(f"{rec} is {words.rstrip(',')}")
            continue
        s = a.savings[(a.savings["point_id"] == ref["point_id"]) & (a.savings["against"] == against)]
        e, t = s[s["metric"] == a.energy_metric], s[s["metric"] == "tpot_s"]
        if e.empty:
            continue
        e = e.iloc[0]
        more_less = "less" if e["change"] <= 0 else "more"
        text = (f"{rec} uses {abs(100 * e['change']):.0f} % {more_less} {what} than {words} "
                f"({describe(ref, d)})".replace(", (", " (") + _interval_words(e["lo"], e["hi"], e["change"] <= 0))
        if not t.empty:
            text += f", at {pct(t.iloc[0]['change'])} TPOT"
        parts.append(text)
    if not parts:
        return f"Recommended: {rec}."
    return ", and ".join([parts[0]] + [p.removeprefix(rec + " ") for p in parts[1:]]) + "."


def _change(a: "Advice", against: str) -> str:
    """"-29 % [-36, -20]" of the energy metric against a reference, or why there is none."""
    s = a.savings[(a.savings["against"] == against) & (a.savings["metric"] == a.energy_metric)] \
        if len(a.savings) else a.savings
    if s.empty:
        return "not measured"
    r = s.iloc[0]
    if a.recommended is not None and r["point_id"] == a.recommended["point_id"]:
        return "is this point"
    interval = f" [{100 * r['lo']:+.0f}, {100 * r['hi']:+.0f}]" if np.isfinite(r["lo"]) else ""
    return f"{100 * r['change']:+.0f} %{interval}"


CARBON_COST = ("co2_per_token_g", "cost_per_mtoken_usd", "co2_total_per_token_g", "cost_total_per_mtoken_usd")


def advice_table(advices: list["Advice"]) -> pd.DataFrame:
    """One row per workload: the recommended configuration, its measured numbers with 95 % intervals, CO2 and
    cost where the factors are known, and its energy change against the paper's default and the fastest point."""
    rows = []
    for a in advices:
        row: dict[str, object] = {"workload": a.label}
        pick = a.recommended if a.recommended is not None else a.closest
        row["recommended"] = "none meets the constraints" if pick is None else (
            describe(pick, a.points) + ("" if a.recommended is not None else " (closest, misses)"))
        if pick is not None:
            e = a.energy_metric
            row.update({"point_id": pick["point_id"], e: pick[e], f"{e}_lo": pick[f"{e}_lo"],
                        f"{e}_hi": pick[f"{e}_hi"], "tpot_s": pick["tpot_s"], "ttft_s": pick["ttft_s"],
                        "tokens_per_s": pick["tokens_per_s"], "gpus": pick.get("gpus", pick["shards"])})
            row.update({c: pick[c] for c in CARBON_COST if c in pick and pd.notna(pick[c])})
        row["vs paper default"] = _change(a, "the paper's default")
        row["vs fastest"] = _change(a, "the fastest point")
        rows.append(row)
    return pd.DataFrame(rows)


FRONT_COLUMNS = ("batch", "shards", "power_cap_w", "engine", "gpus", "n_batches", "tpot_s", "ttft_s", "latency_s",
                 "tokens_per_s", "feasible", "on_front", "role", "point_id")


def front_table(a: "Advice") -> pd.DataFrame:
    """Every measured point of a workload, lowest energy first (tie-break order): knobs, energy with its 95 %
    interval, latencies, tokens/s, whether it is on the Pareto front (all objectives at once), meets the
    constraints, and its role (recommended, paper default, fastest, closest)."""
    if a.points.empty:
        return pd.DataFrame()
    e = a.energy_metric
    cols = [c for c in FRONT_COLUMNS[:5] if c in a.points] + [e, f"{e}_lo", f"{e}_hi"] + \
        [c for c in FRONT_COLUMNS[5:] if c in a.points]
    return a.points[cols].reset_index(drop=True)


def factors_line(points: pd.DataFrame) -> str:
    """The carbon and price factors the CO2 and cost columns used, or how to give them."""
    def one(column: str, unit: str, how: str) -> str:
        values = sorted({float(v) for v in points[column].dropna()}) if column in points else []
        if not values:
            return f"{column} not given ({how}): no column from it"
        return f"{column} = {', '.join(f'{v:g}' for v in values)} {unit}"

    pue = sorted({float(v) for v in points["pue"].dropna()}) if "pue" in points else [1.0]
    carbon = one("carbon_intensity_g_per_kwh", "gCO2e/kWh", "--carbon-g-per-kwh or carbon.intensity_g_per_kwh")
    return "; ".join([carbon,
                      f"PUE = {', '.join(f'{v:g}' for v in pue)}" + (" (the default: IT energy only)"
                                                                     if pue == [1.0] else ""),
                      one("usd_per_kwh", "USD/kWh", "--usd-per-kwh or cost.usd_per_kwh")])
