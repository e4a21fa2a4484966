"""Which configuration to run: per model and workload, the Pareto front of energy against latency and
throughput, the lowest-energy point under a user's constraints, and what it saves (docs/analysis.md).

    import energybench.results as results, energybench.analysis as analysis
    advice = analysis.advise(results.points(p), results.batches(p), analysis.Constraints(max_tpot_s=0.05))
    for a in advice: print(a.sentence)

Measured points only: nothing is interpolated between grid points.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
import pandas as pd

from energybench.analysis.advice_text import LABEL, UNIT, describe, pct, sentence
from energybench.analysis.grid import done, value_label
from energybench.analysis.pareto import pareto_mask
from energybench.analysis.uncertainty import bootstrap_points, relative_difference

# The knobs a user chooses between; every other axis that varies (model, dataset, card, response length...)
# defines the workload, and points are only compared within one workload.
KNOBS = ("batch", "shards", "power_cap_w", "engine")
GROUP_AXES = ("model", "dataset", "gpu_name", "max_tokens", "length", "temperature", "top_p", "dtype")
LATENCY = ("tpot_s", "ttft_s", "latency_s")
INTERVAL_METRICS = ("energy_per_token_j", "energy_per_response_j", "tokens_per_s", "tpot_s", "ttft_s", "latency_s")
PAPER_BATCH, PAPER_ENGINE = 64, "reference"


@dataclass(frozen=True)
class Constraints:
    max_tpot_s: float | None = None  # time per output token (decode step), seconds
    max_ttft_s: float | None = None  # time to first token of a batch, seconds
    max_latency_s: float | None = None  # time per response (a batch's generate call), seconds
    min_tokens_per_s: float | None = None  # generated tokens per second of the whole job
    max_gpus: int | None = None  # GPUs the job may use

    def checks(self) -> list[tuple[str, str, float, str]]:
        """(column, "max" | "min", limit, words) of each constraint set."""
        out = []
        for f in fields(self):
            limit = getattr(self, f.name)
            if limit is not None:
                bound, column = f.name.split("_", 1)  # max_tpot_s -> ("max", "tpot_s")
                sign = "≤" if bound == "max" else "≥"
                words = f"{LABEL.get(column, column)} {sign} {limit:g}{UNIT.get(column, '')}"
                out.append((column, bound, float(limit), words))
        return out


@dataclass
class Advice:
    """The answer for one workload (one group of points)."""
    group: dict[str, object]  # the workload: model, dataset and every other non-knob axis that varies
    energy_metric: str  # energy_per_token_j or energy_per_response_j
    points: pd.DataFrame  # measured points: knobs, metrics with _lo/_hi, on_front*, feasible, violation, role
    recommended: pd.Series | None = None  # lowest energy among the points meeting every constraint
    closest: pd.Series | None = None  # when none meets them: the point with the smallest worst violation
    default: pd.Series | None = None  # the paper's setting: batch 64, fewest shards, no cap
    fastest: pd.Series | None = None  # highest tokens/s
    savings: pd.DataFrame = field(default_factory=pd.DataFrame)  # against, metric, change, lo, hi
    not_measured: pd.DataFrame = field(default_factory=pd.DataFrame)  # failed, skipped, interrupted, no energy
    notes: list[str] = field(default_factory=list)  # grid too sparse, stand-ins, ties, closest point
    sentence: str = ""  # the recommendation and its saving in plain words

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={value_label(k, v)}" for k, v in self.group.items())


def _gpus(d: pd.DataFrame) -> pd.Series:
    gpus = pd.to_numeric(d["gpus"], errors="coerce") if "gpus" in d else pd.Series(np.nan, index=d.index)
    return gpus.fillna(pd.to_numeric(d["shards"], errors="coerce")).astype(float)


def rank(d: pd.DataFrame, energy: str) -> pd.DataFrame:
    """Tie-break order (documented in docs/analysis.md): lower energy, lower TPOT, higher tokens/s, fewer
    GPUs, then point id, so equal measurements always resolve the same way."""
    keyed = d.assign(_e=d[energy], _t=d["tpot_s"], _r=-d["tokens_per_s"], _g=_gpus(d), _p=d["point_id"].astype(str))
    return keyed.sort_values(["_e", "_t", "_r", "_g", "_p"], na_position="last").drop(
        columns=["_e", "_t", "_r", "_g", "_p"])


def violations(d: pd.DataFrame, constraints: Constraints) -> pd.DataFrame:
    """Per point and constraint, how far past its limit (relative; <= 0 is met; null metric: inf)."""
    out = pd.DataFrame(index=d.index)
    for column, bound, limit, words in constraints.checks():
        value = _gpus(d) if column == "gpus" else pd.to_numeric(d[column], errors="coerce").astype(float)
        over = value / limit - 1 if bound == "max" else limit / value.where(value > 0) - 1
        out[words] = over.fillna(np.inf)
    return out


def _intervals(d: pd.DataFrame, batches: pd.DataFrame | None, n: int, seed: int) -> pd.DataFrame:
    """<metric>_lo/_hi of each point: the relative spread of its batches' bootstrap around the batch estimate,
    applied to the point's own value (batch sums leave out the gaps between batches)."""
    d = d.copy()
    for m in INTERVAL_METRICS:
        d[f"{m}_lo"], d[f"{m}_hi"] = np.nan, np.nan
    d["n_batches"] = pd.Series(pd.NA, index=d.index, dtype="Int64")
    if batches is None or batches.empty or n <= 0:
        return d
    mine = batches[batches["point_id"].astype(str).isin(d["point_id"].astype(str))]
    ci = bootstrap_points(mine, INTERVAL_METRICS, n=n, seed=seed)
    by_id = {pid: i for i, pid in zip(d.index, d["point_id"].astype(str))}
    for r in ci.itertuples(index=False):
        i = by_id[r.point_id]
        d.loc[i, "n_batches"] = r.n_batches
        if r.value and np.isfinite(r.value) and r.metric in d:
            d.loc[i, f"{r.metric}_lo"] = d.loc[i, r.metric] * r.lo / r.value
            d.loc[i, f"{r.metric}_hi"] = d.loc[i, r.metric] * r.hi / r.value
    return d


def _default(d: pd.DataFrame, energy: str, notes: list[str]) -> pd.Series | None:
    """The paper's setting: batch 64, the reference engine, no power cap, the fewest shards measured."""
    cand = d[d["batch"] == PAPER_BATCH]
    if cand.empty:
        notes.append(f"the paper's default (batch {PAPER_BATCH}) was not measured here: no saving against it")
        return None
    if (cand["engine"] == PAPER_ENGINE).any():
        cand = cand[cand["engine"] == PAPER_ENGINE]
    capped = pd.to_numeric(cand["power_cap_w"], errors="coerce")
    if capped.notna().all():
        top = capped.max()
        cand = cand[capped == top]
        notes.append(f"no uncapped batch-{PAPER_BATCH} point was measured: the highest cap ({top:g} W) stands in "
                     "for the paper's 'no cap'")
    else:
        cand = cand[capped.isna()]
    cand = cand[cand["shards"] == cand["shards"].min()]
    return rank(cand, energy).iloc[0]


def _fastest(d: pd.DataFrame, energy: str) -> pd.Series:
    keyed = d.assign(_r=-d["tokens_per_s"], _t=d["tpot_s"], _e=d[energy], _p=d["point_id"].astype(str))
    return keyed.sort_values(["_r", "_t", "_e", "_p"]).drop(columns=["_r", "_t", "_e", "_p"]).iloc[0]


def _sparse(d: pd.DataFrame) -> list[str]:
    notes = []
    for knob in KNOBS:
        if knob in d and d[knob].nunique(dropna=False) == 1:
            notes.append(f"the grid has a single {knob} ({value_label(knob, d[knob].iloc[0])}): too sparse to say "
                         f"anything about {knob}")
    return notes


def _not_measured(group: pd.DataFrame, energy: str) -> pd.DataFrame:
    cols = [c for c in ("point_id", *KNOBS, "status", "reason", "batches_done", "batches_expected") if c in group]
    rest = group[(group["status"] != "done") | group[energy].isna()].copy()
    no_energy = (rest["status"] == "done") & rest[energy].isna()
    rest.loc[no_energy, "reason"] = f"done, but no {energy} (no energy measured: CPU run or meter.gpu=none)"
    return rest[cols].reset_index(drop=True)


def _savings(rec: pd.Series, refs: dict[str, pd.Series | None], energy: str, batches: pd.DataFrame | None,
             n: int, seed: int) -> pd.DataFrame:
    """change = recommended / reference - 1 of energy, TPOT, TTFT and tokens/s, with the batches' 95 % interval
    (each point's batches resampled independently; the batch-level relative interval applied to the change)."""
    rows = []
    for against, ref in refs.items():
        if ref is None:
            continue
        for m in (energy, "tpot_s", "ttft_s", "tokens_per_s"):
            if pd.isna(rec[m]) or pd.isna(ref[m]) or not ref[m]:
                continue
            change, lo, hi = rec[m] / ref[m] - 1, np.nan, np.nan
            if batches is not None and n > 0 and rec["point_id"] != ref["point_id"]:
                try:
                    b, blo, bhi = relative_difference(batches, str(rec["point_id"]), str(ref["point_id"]), m, n, seed)
                    lo, hi = (1 + change) * (1 + blo) / (1 + b) - 1, (1 + change) * (1 + bhi) / (1 + b) - 1
                except ValueError:  # a point without batches: no interval
                    pass
            elif rec["point_id"] == ref["point_id"]:
                lo = hi = 0.0
            rows.append({"against": against, "point_id": ref["point_id"], "metric": m, "change": change,
                         "lo": lo, "hi": hi})
    return pd.DataFrame(rows, columns=["against", "point_id", "metric", "change", "lo", "hi"])


def _closest(d: pd.DataFrame, over: pd.DataFrame, constraints: Constraints, energy: str) -> tuple[pd.Series, str]:
    """The point whose worst relative violation is smallest (ties: `rank`), and what it misses, in words."""
    worst = over.max(axis=1)
    row = rank(d.loc[worst[worst == worst.min()].index], energy).iloc[0]
    missed = []
    for column, _, limit, words in constraints.checks():
        if over.loc[row.name, words] > 0:
            value = _gpus(d).loc[row.name] if column == "gpus" else row[column]
            unit = UNIT.get(column, "")
            missed.append(f"{LABEL[column]} {value:.3g}{unit} against the limit {limit:g}{unit} "
                          f"({pct(over.loc[row.name, words])})")
    return row, f"the closest is {describe(row, d)} ({row['point_id']}): " + "; ".join(missed)


def _fronts(d: pd.DataFrame, energy: str) -> pd.DataFrame:
    d = d.copy()
    d["on_front"] = pareto_mask(d, minimize=[energy, *LATENCY], maximize=["tokens_per_s"])
    for m in LATENCY:
        d[f"on_front_{m}"] = pareto_mask(d, minimize=[energy, m])
    d["on_front_tokens_per_s"] = pareto_mask(d, minimize=[energy], maximize=["tokens_per_s"])
    return d


def _recommend(a: Advice, feasible: pd.DataFrame, batches: pd.DataFrame | None, n: int, seed: int) -> None:
    """The first of the ranked feasible points, its savings, and notes on ties and on a runner-up that the
    batches cannot tell apart from it."""
    energy = a.energy_metric
    a.recommended = best = feasible.iloc[0]
    tied = feasible[(feasible[energy] == best[energy]) & (feasible.index != best.name)]
    if len(tied):
        a.notes.append(f"{len(tied) + 1} points tie at {energy}={best[energy]:.4g}; {best['point_id']} wins the "
                       "tie-break (lower TPOT, higher tokens/s, fewer GPUs, then point id)")
    elif len(feasible) > 1 and batches is not None and n > 0:
        runner = feasible.iloc[1]
        s = _savings(best, {"runner-up": runner}, energy, batches, n, seed)
        s = s[s["metric"] == energy]
        if len(s) and np.isfinite(s["hi"].iloc[0]) and s["hi"].iloc[0] >= 0:
            lo, hi = s["lo"].iloc[0], s["hi"].iloc[0]
            a.notes.append(f"the runner-up, {describe(runner, feasible)}, is within the uncertainty: "
                           f"{pct(s['change'].iloc[0])} {LABEL[energy]} against it, 95 % interval {pct(lo)} to "
                           f"{pct(hi)}; the batches cannot tell the two apart")
    a.savings = _savings(best, {"the paper's default": a.default, "the fastest point": a.fastest}, energy,
                         batches, n, seed)


def advise_group(group: pd.DataFrame, key: dict[str, object], batches: pd.DataFrame | None,
                 constraints: Constraints, per: str, n: int, seed: int) -> Advice:
    """The advice for the points of one workload (see `advise`)."""
    energy = f"energy_per_{per}_j"
    a = Advice(group=key, energy_metric=energy, points=pd.DataFrame(), not_measured=_not_measured(group, energy))
    d = group[(group["status"] == "done") & group[energy].notna()]
    if d.empty:
        a.notes.append("no finished point with energy measured: nothing to recommend")
        return a
    d = _fronts(_intervals(d, batches, n, seed), energy)
    over = violations(d, constraints)
    d["feasible"] = (over <= 0).all(axis=1)
    d["violation"] = over.max(axis=1) if len(over.columns) else 0.0
    a.notes += _sparse(d)
    few = d[d["n_batches"].fillna(0) < 2] if batches is not None and n > 0 else d.iloc[0:0]
    if len(few):
        a.notes.append(f"{len(few)} point(s) measured fewer than two batches ({', '.join(map(str, few['point_id']))}): "
                       "no interval for them or for a saving against them (run samples >= 2 x batch)")
    a.default, a.fastest = _default(d, energy, a.notes), _fastest(d, energy)
    feasible = rank(d[d["feasible"]], energy)
    if feasible.empty:
        a.closest, text = _closest(d, over, constraints, energy)
        a.notes.append(f"no measured point meets {' and '.join(over.columns)}; {text}")
        a.sentence = a.notes[-1][0].upper() + a.notes[-1][1:] + "."
    else:
        _recommend(a, feasible, batches, n, seed)
    role = pd.Series("", index=d.index, dtype=object)
    for name, row in (("fastest", a.fastest), ("paper default", a.default), ("closest", a.closest),
                      ("recommended", a.recommended)):
        if row is not None:
            role[row.name] = ", ".join(filter(None, [role[row.name], name]))
    a.points = rank(d.assign(role=role), energy)
    a.sentence = a.sentence or sentence(a, d)
    return a


def groups(points: pd.DataFrame) -> list[tuple[dict[str, object], pd.DataFrame]]:
    """The workloads: finished points split by every non-knob axis that varies among them (model and dataset
    always named). A point not done joins each workload its known axes match (a failed point has no gpu_name)."""
    d = done(points)
    axes = [g for g in GROUP_AXES if g in points and (g in ("model", "dataset") or d[g].nunique(dropna=False) > 1)]
    rest = points[points["status"] != "done"]
    out = []
    for key, part in d.groupby(axes, dropna=False, sort=True, observed=True):
        key = dict(zip(axes, key if isinstance(key, tuple) else (key,)))
        match = pd.Series(True, index=rest.index)
        for axis, value in key.items():
            match &= rest[axis].isna() | (rest[axis] == value)
        out.append((key, pd.concat([part, rest[match]])))
    orphans = rest.drop(index=[i for _, part in out for i in part.index if i in rest.index])
    for key, part in orphans.groupby(["model", "dataset"], dropna=False, sort=True, observed=True):
        out.append((dict(zip(["model", "dataset"], key)), part))
    return out


def advise(points: pd.DataFrame, batches: pd.DataFrame | None = None, constraints: Constraints = Constraints(),
           per: str = "token", n: int = 1000, seed: int = 0) -> list[Advice]:
    """One Advice per workload of `points` (energybench.results.points): the Pareto front of energy per `per`
    ("token" or "response") against TTFT, TPOT, time per response and tokens/s; the lowest-energy point that
    meets `constraints` (or the closest one); the paper's default and the fastest point; the savings against
    both with 95 % bootstrap intervals over `batches` (energybench.results.batches; `n` resamples, `seed`;
    None or n=0: no intervals). Raises ValueError for an unknown `per` or a frame without the knob columns."""
    if per not in ("token", "response"):
        raise ValueError(f"per={per!r}: use 'token' or 'response'")
    missing = [c for c in ("point_id", "status", *KNOBS) if c not in points]
    if missing:
        raise ValueError(f"the points frame has no {missing[0]!r} column: pass energybench.results.points(...)")
    return [advise_group(part, key, batches, constraints, per, n, seed) for key, part in groups(points)]
