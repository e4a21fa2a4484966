"""The paper's findings against a reproduction's records: Markdown tables with 95 % bootstrap intervals.

Each table is made from the committed records alone (run.parquet for a point's numbers, batches.parquet for
its interval) and names the point each number comes from, so `scripts/docs_tables.py` can regenerate
docs/results/README.md and check it. `python -m energybench.analysis.findings DIR` prints every table.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from energybench.analysis.uncertainty import bootstrap_points, relative_difference
from energybench.results import batches as load_batches
from energybench.results import points as load_points
from energybench.util import tables

Args = dict[str, list[str]]
NO_INTERVAL = "1 batch: no interval"
METRICS = ("energy_per_token_j", "tokens_per_s", "power_w")


@functools.lru_cache(maxsize=8)
def _load(source: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(done points, their measured batches, bootstrap intervals) of every sweep under `source`."""
    pts = load_points(source)
    pts = pts[pts["status"] == "done"].assign(size=pts["model"].str.extract(r"(\d+)", expand=False).astype(float))
    pts = pts.sort_values(["size", "model", "shards", "engine", "dataset", "batch", "max_tokens", "length"])
    pts = pts.drop(columns="size").reset_index(drop=True)
    b = load_batches(source)
    return pts, b, bootstrap_points(b, metrics=METRICS)


def short(point_id: str) -> str:
    """The point id's readable part and hash, as the folder is named (point=<id>)."""
    return f"`{point_id}`"


def point_rows(source: Path, where: list[str] = ()) -> list[dict]:
    """Done points under `source` as dicts (run.parquet columns and derived ones), filtered by `where`
    (`KEY=VALUE` / `KEY!=VALUE`, util.tables.where)."""
    return tables.where(_load(str(source))[0].to_dict("records"), where)


def with_interval(source: Path, point_id: str, metric: str, spec: str) -> str:
    """'value [lo, hi]': the point's run.parquet value (its whole generation window) and the 95 % bootstrap
    interval over its measured batches, scaled to that value (the batches' sums leave out the moments between
    batches, so their estimate differs from the window's by up to a few per cent)."""
    pts, _, ci = _load(str(source))
    value = pts.loc[pts["point_id"] == point_id, metric].iloc[0]
    row = ci[(ci["point_id"] == point_id) & (ci["metric"] == metric)]
    if row.empty or np.isnan(row["lo"].iloc[0]):
        return f"{value:{spec}} ({NO_INTERVAL})"
    scale = value / row["value"].iloc[0]  # the batches' relative spread, about the point's own value
    return f"{value:{spec}} [{scale * row['lo'].iloc[0]:{spec}}, {scale * row['hi'].iloc[0]:{spec}}]"


def ratio(source: Path, a: str, b: str, metric: str) -> str:
    """'a/b [lo, hi]': the ratio of two points' metric, its interval from resampling both points' batches."""
    pts, batches, _ = _load(str(source))
    va, vb = (pts.loc[pts["point_id"] == p, metric].iloc[0] for p in (a, b))
    diff, lo, hi = relative_difference(batches, a, b, metric)
    if np.isnan(lo):
        return f"{va / vb:.2f} ({NO_INTERVAL})"
    scale = va / vb / (1 + diff)  # the batches' relative spread, about the points' own ratio
    return f"{va / vb:.2f} [{scale * (1 + lo):.2f}, {scale * (1 + hi):.2f}]"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _select(pts: pd.DataFrame, **keys: object) -> pd.DataFrame:
    for k, v in keys.items():
        pts = pts[pts[k] == v]
    return pts


def _one(pts: pd.DataFrame, **keys: object) -> str | None:
    """The point id matching `keys` (None if not measured); more than one is an error in the grid."""
    sel = _select(pts, **keys)
    if len(sel) > 1:
        raise ValueError(f"{len(sel)} points match {keys}: {', '.join(sel['point_id'])}")
    return None if sel.empty else str(sel["point_id"].iloc[0])


def all_points(source: Path, args: Args) -> str:
    """Every done point: shape, prompts, measured batches, J/token, tokens/s, power with 95 % intervals."""
    pts = _load(str(source))[0]
    rows = [[str(r.sweep), short(r.point_id), r.model, r.dataset, str(r.batch), str(r.max_tokens), str(r.shards),
             r.engine, r.length, str(r.samples), str(r.batches),
             with_interval(source, r.point_id, "energy_per_token_j", ".3f"),
             with_interval(source, r.point_id, "tokens_per_s", ",.0f"),
             with_interval(source, r.point_id, "power_w", ",.0f")] for r in pts.itertuples()]
    return _table(["sweep", "point", "model", "dataset", "batch", "max tokens", "shards", "engine", "length",
                   "prompts", "measured batches", "J/token [95 %]", "tokens/s [95 %]", "power W (all GPUs) [95 %]"],
                  rows)


def provenance(source: Path, args: Args) -> str:
    """Per point: commit (and how it is known), card and count, host, software versions, the sweep command."""
    pts = _load(str(source))[0]
    rows = [[short(r.point_id), f"`{str(r.git_commit)[:12]}`" + (" (dirty)" if r.git_dirty else ""),
             str(r.code_source), f"{r.gpus} × {r.gpu_name}", str(r.hostnames),
             f"torch {r.torch_version}, CUDA {r.cuda_version}, driver {r.driver_version}, NCCL {r.nccl_version}",
             str(r.started_at)[:16], f"`{r.command}`"] for r in pts.itertuples()]
    return _table(["point", "commit", "commit known by", "card", "host", "software", "started (UTC)", "command"],
                  rows)


def _pair_rows(source: Path, pairs: list[tuple[str, dict, dict]], metric: str, spec: str) -> list[list[str]]:
    """One row per (label, keys of a, keys of b) measured: both values with intervals and their ratio a/b."""
    pts = _load(str(source))[0]
    rows = []
    for label, ka, kb in pairs:
        a, b = _one(pts, **ka), _one(pts, **kb)
        if a is None or b is None:
            continue
        rows.append([label, with_interval(source, a, metric, spec), with_interval(source, b, metric, spec),
                     ratio(source, a, b, metric), f"{short(a)} / {short(b)}"])
    return rows


def throughput_by_model(source: Path, args: Args) -> str:
    """Tokens/s of 13B against 7B on one GPU, and of 65B against 13B and 7B on the pair, per engine."""
    main = dict(batch=64, max_tokens=256, length="sampled")
    pairs = []
    for engine in ("reference", "fast"):
        for dataset in ("alpaca", "gsm8k"):
            pairs.append((f"13B / 7B, 1 GPU, {engine}, {dataset}", dict(model="13b", shards=1, engine=engine,
                          dataset=dataset, **main), dict(model="7b", shards=1, engine=engine, dataset=dataset, **main)))
        for small in ("13b", "7b"):
            pairs.append((f"65B gsm8k / {small.upper()} alpaca, 2 GPUs, {engine}",
                          dict(model="65b", shards=2, engine=engine, dataset="gsm8k", **main),
                          dict(model=small, shards=2, engine=engine, dataset="alpaca", **main)))
    return _table(["ratio", "tokens/s a [95 %]", "tokens/s b [95 %]", "a / b [95 %]", "points a / b"],
                  _pair_rows(source, pairs, "tokens_per_s", ",.0f"))


def by_shards(source: Path, args: Args) -> str:
    """J/token (args 'metric:') at shards 2 against shards 1, alpaca batch 64, 256 tokens, per model and engine."""
    metric = (args.get("metric") or ["energy_per_token_j"])[0]
    spec = ".3f" if metric == "energy_per_token_j" else ",.0f"
    base = dict(dataset="alpaca", batch=64, max_tokens=256, length="sampled")
    pairs = [(f"{m.upper()} {e}: shards 2 / 1", dict(model=m, engine=e, shards=2, **base),
              dict(model=m, engine=e, shards=1, **base)) for m in ("7b", "13b") for e in ("reference", "fast")]
    return _table(["model, engine", f"{metric} at 2 [95 %]", f"{metric} at 1 [95 %]", "2 / 1 [95 %]",
                   "points 2 / 1"], _pair_rows(source, pairs, metric, spec))


def _sweep_rows(source: Path, axis: str, values: list[int], **keys: object) -> list[list[str]]:
    pts = _load(str(source))[0]
    rows = []
    for v in values:
        pid = _one(pts, **{axis: v}, **keys)
        if pid is not None:
            rows.append([str(keys.get("model", "")).upper(), str(v),
                         with_interval(source, pid, "energy_per_token_j", ".3f"),
                         with_interval(source, pid, "tokens_per_s", ",.0f"),
                         with_interval(source, pid, "power_w", ",.0f"), short(pid)])
    return rows


def by_axis(source: Path, args: Args) -> str:
    """J/token, tokens/s and power along one axis ('axis: batch' or 'max_tokens'), reference engine, 1 GPU."""
    axis = args["axis"][0]
    fixed = dict(engine="reference", dataset="alpaca", shards=1, length="sampled")
    fixed.update(dict(max_tokens=256) if axis == "batch" else dict(batch=64))
    values = sorted(_load(str(source))[0][axis].unique())
    rows = [r for m in ("7b", "13b") for r in _sweep_rows(source, axis, values, model=m, **fixed)]
    return _table(["model", axis, "J/token [95 %]", "tokens/s [95 %]", "power W [95 %]", "point"], rows)


SHAPE = ("model", "dataset", "batch", "max_tokens", "shards", "engine", "length")  # what defines a shape


def _against(pts: pd.DataFrame, axis: str, a: str, b: str, label) -> list[tuple[str, dict, dict]]:
    """(label, keys of a, keys of b): each point with `axis` = a beside the point of the same shape with b."""
    pairs = []
    for r in _select(pts, **{axis: a}).itertuples():
        keys = {k: getattr(r, k) for k in SHAPE if k != axis}
        pairs.append((label(r), {axis: a, **keys}, {axis: b, **keys}))
    return pairs


def engines(source: Path, args: Args) -> str:
    """What the engine costs: reference against fast J/token at the same shape."""
    pairs = _against(_load(str(source))[0], "engine", "reference", "fast",
                     lambda r: f"{r.model.upper()} {r.dataset} s{r.shards}: reference / fast")
    return _table(["shape", "J/token reference [95 %]", "J/token fast [95 %]", "reference / fast [95 %]",
                   "points"], _pair_rows(source, pairs, "energy_per_token_j", ".3f"))


def _frac(num: object, den: object) -> str:
    return "" if pd.isna(num) or pd.isna(den) or not den else f"{100 * float(num) / float(den):.0f} %"


def where_energy_goes(source: Path, args: Args) -> str:
    """Per point: prefill and idle shares of its energy, GPU utilization and memory, roofline fraction."""
    pts = _load(str(source))[0]
    rows = [[short(r.point_id), _frac(r.prefill_energy_j, r.energy_j), _frac(r.decode_energy_j, r.energy_j),
             _frac(r.idle_power_w * r.duration_s, r.energy_j), f"{r.idle_power_w:.0f}",
             f"{r.gpu_util_pct:.0f} %", f"{100 * r.gpu_mem_used_frac:.0f} %",
             "" if pd.isna(r.roofline_frac) else f"{100 * r.roofline_frac:.1f} %",
             f"{int(r.wasted_tokens):,}"] for r in pts.itertuples()]
    return _table(["point", "prefill share of energy", "decode share", "idle share (idle W × duration / energy)",
                   "idle W (all GPUs)", "GPU util (mean)", "GPU memory used", "of decode roofline",
                   "wasted tokens"], rows)


def lengths(source: Path, args: Args) -> str:
    """length=sampled against length=oracle at the same shape (what random weights change)."""
    pts = _load(str(source))[0]
    pairs = _against(pts, "length", "oracle", "sampled",
                     lambda r: f"{r.model.upper()} {r.dataset} b{r.batch} t{r.max_tokens}: oracle / sampled")
    rows = _pair_rows(source, pairs, "energy_per_token_j", ".3f")
    toks = [[f"{int(_select(pts, point_id=p)['tokens'].iloc[0]):,}" for p in r[-1].replace("`", "").split(" / ")]
            for r in rows]
    return _table(["shape", "J/token oracle [95 %]", "J/token sampled [95 %]", "oracle / sampled [95 %]", "points",
                   "tokens oracle", "tokens sampled"], [r + t for r, t in zip(rows, toks)])


TABLES: dict[str, Callable[[Path, Args], str]] = {
    "results-points": all_points, "results-provenance": provenance, "results-throughput": throughput_by_model,
    "results-shards": by_shards, "results-axis": by_axis, "results-engines": engines,
    "results-energy": where_energy_goes, "results-length": lengths,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: python -m energybench.analysis.findings RESULTS_DIR (a folder of sweeps)", file=sys.stderr)
        return 2
    source = Path(argv[0])
    extra = {"results-shards": [{}, {"metric": ["power_w"]}], "results-axis": [{"axis": ["batch"]},
                                                                              {"axis": ["max_tokens"]}]}
    for name, fn in TABLES.items():
        for args in extra.get(name, [{}]):
            print(f"## {name} {args or ''}\n\n{fn(source, args)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
